from fourreal.cli import main

main()
