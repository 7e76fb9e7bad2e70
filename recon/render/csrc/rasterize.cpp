// Compiled CPU backend of fourreal.recon.render.rasterize (design.md §6).
//
// Plain C++ with a C ABI, loaded with ctypes by cpu_backend.py (docs/render.md says why this
// route and not a torch extension). Python allocates every buffer as a torch tensor and passes
// raw pointers; nothing here allocates memory that outlives a call.
//
// The projection (means -> screen position, conic, depth, footprint) stays in PyTorch autograd
// (project.py), exactly as in the torch backend; this file does what that backend spends its
// time on:
//   bin_count / bin_fill: tile ranges of every Gaussian, a stable radix sort by camera depth
//       (ties by index), every binned Gaussian's values packed into one record in that order,
//       and per-tile lists of record indices filled in that order, so each list is depth-sorted
//       and walks the records forward in memory;
//   forward: front-to-back compositing of each tile's list, tiles in parallel (OpenMP), the
//       pixels of each pair's rows as one SIMD loop, stopping a tile when all its pixels are
//       done (float32 with 8×8 tiles on CPUs with AVX2 and FMA: tile8_avx2.h, one row per
//       vector; everything else: the loops below, vectorized by the compiler);
//   backward: the compositing gradient, replaying each tile's list back to front from the
//       final transmittance (as 3DGS and gsplat do), one gradient row per (tile, Gaussian)
//       pair, then a deterministic per-Gaussian sum over its pairs.
//
// The exponent is evaluated the way the torch backend does it: pixel coordinates relative to the
// tile's corner, psi(Gaussian) = (a, 2b, c, -2(a mx + b my), -2(b mx + c my), a mx² + 2b mx my +
// c my²) with every operation rounded as PyTorch rounds it, and m = psi·phi as one chain of
// fused multiply-adds in the order MKL's gemm uses, so that m, and with it the hard 3σ cut
// m <= 9, agree bit for bit with the reference in float32. Compile with -ffp-contract=off so the
// compiler adds no other fused operations.

#include <omp.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FR_TILE8_AVX2 1
#endif

extern "C" {
// Everything one call needs; cpu_backend._Args mirrors it field by field (all 8-byte fields).
struct FrArgs {
  int64_t cameras, gaussians, width, height, tile, num_threads;
  double alpha_min, alpha_max, mahalanobis_max, t_min, exp_floor;
  // projected Gaussians (camera-major) and per-Gaussian attributes
  const void* mean2d;      // [C, N, 2] pixels
  const void* conic;       // [C, N, 3] (a, b, c) of the inverse 2D covariance
  const void* depth;       // [C, N] camera z
  const void* radius;      // [C, N, 2] footprint half extents, pixels
  const uint8_t* visible;  // [C, N]
  const void* opacities;   // [N]
  const void* colors;      // [N, 3]
  const void* background;  // [3]
  // binning
  int32_t* rect;          // [C*N, 4] inclusive tile range x0, y0, x1, y1; by record after binning
  int32_t* pair_count;    // [C*N] tiles each Gaussian touches (0: not binned)
  int64_t* pair_offset;   // [C*N + 1] first slot of each record's pairs
  int32_t* rank_gauss;    // [C*N] Gaussian id of each record (-1 past the binned ones)
  void* packed;           // [C*N, kRecord] binned Gaussians' values, camera by camera, by depth
  int64_t* tile_start;    // [tiles + 1] first pair of each tile's list
  int32_t* tile_rank;     // [pairs] record index of each pair, by tile, then depth
  int32_t* tile_end;      // [tiles] length of the front of each list the backward pass used
  int32_t* pair_slot;     // [pairs] list position of each slot
  // forward outputs
  void* rgb;         // [C, H, W, 3]
  void* alpha;       // [C, H, W]
  void* depth_out;   // [C, H, W]
  void* t_final;     // [C, H, W]
  int32_t* last;     // [C, H, W] list position where the pixel stopped, else the list length
  // backward
  const void* grad_rgb;    // [C, H, W, 3]
  const void* grad_alpha;  // [C, H, W]
  const void* grad_depth;  // [C, H, W]
  void* pair_grad;         // [pairs, 10] per list position: d(u, v, a, b, c, opacity, r, g, b, z),
                           // written only for positions before tile_end
  void* grad_mean2d;       // [C, N, 2]
  void* grad_conic;        // [C, N, 3]
  void* grad_depth_in;     // [C, N]
  void* grad_opacities;    // [N]
  void* grad_colors;       // [N, 3]
};
}

namespace {

constexpr int kPairGrad = 10;

// exp for arguments in [-87.3, 1]: Cody-Waite reduction and a polynomial, written so that a
// SIMD loop can inline it (libm's exp does not vectorize without -ffast-math). Within about one
// ulp of the correctly rounded result.
inline float fast_exp(float x) {
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = x - n * 0.693359375f;  // exact: few bits in the constant, |n| <= 126
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r) + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline double fast_exp(double x) {
  const double n = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;
  double r = x - n * 6.93145751953125e-1;
  r = r - n * 1.42860682030941723212e-6;
  // Taylor series to r^13 / 13!: |r| <= 0.35 leaves a truncation error below 1e-17
  double p = 1.0 / 6227020800.0;
  const double inv_fact[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                             1.0 / 362880.0,    1.0 / 40320.0,    1.0 / 5040.0,
                             1.0 / 720.0,       1.0 / 120.0,      1.0 / 24.0,
                             1.0 / 6.0,         0.5,              1.0,
                             1.0};
  for (double c : inv_fact) p = std::fma(p, r, c);
  const int64_t bits = (static_cast<int64_t>(n) + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

template <typename T>
struct Consts {
  T alpha_min, alpha_max, mahalanobis_max, t_min, exp_floor;
  explicit Consts(const FrArgs& a)
      : alpha_min(static_cast<T>(a.alpha_min)),
        alpha_max(static_cast<T>(a.alpha_max)),
        mahalanobis_max(static_cast<T>(a.mahalanobis_max)),
        t_min(static_cast<T>(a.t_min)),
        exp_floor(static_cast<T>(a.exp_floor)) {}
};

struct Grid {
  int64_t tile, tiles_x, tiles_y, per_camera, tiles, pixels;
  explicit Grid(const FrArgs& a)
      : tile(a.tile),
        tiles_x((a.width + a.tile - 1) / a.tile),
        tiles_y((a.height + a.tile - 1) / a.tile),
        per_camera(tiles_x * tiles_y),
        tiles(a.cameras * per_camera),
        pixels(a.tile * a.tile) {}
};

// φ = (x², xy, y², x, y, 1) of the pixel centers of a tile relative to its corner, pixel
// p = row * tile + column; stored as six planes of length tile².
template <typename T>
std::vector<T> pixel_features(int64_t tile) {
  const int64_t P = tile * tile;
  std::vector<T> phi(6 * P);
  for (int64_t py = 0; py < tile; ++py) {
    for (int64_t px = 0; px < tile; ++px) {
      const T x = static_cast<T>(px) + T(0.5), y = static_cast<T>(py) + T(0.5);
      const int64_t p = py * tile + px;
      phi[0 * P + p] = x * x;
      phi[1 * P + p] = x * y;
      phi[2 * P + p] = y * y;
      phi[3 * P + p] = x;
      phi[4 * P + p] = y;
      phi[5 * P + p] = T(1);
    }
  }
  return phi;
}

// A binned Gaussian's record: screen position, conic, opacity, color, depth, and the rows its
// footprint spans, about v - r - 1/2 and v + r - 1/2 (pixel row y is inside where y lies between).
constexpr int kRecord = 12;

// A tile's list visits records far apart in memory (one cache miss each): ask for them a few
// pairs ahead.
constexpr int64_t kPrefetch = 6;
template <typename T>
inline void prefetch_record(const T* packed, int32_t rank) {
  const char* at = reinterpret_cast<const char*>(packed + int64_t(rank) * kRecord);
  __builtin_prefetch(at);
  __builtin_prefetch(at + sizeof(T) * kRecord - 1);
}

// One (tile, Gaussian) pair: the exponent's coefficients in tile coordinates, the values, and
// the pixels p_begin <= p < p_end (whole rows) that can be touched.
template <typename T>
struct Pair {
  T psi[6];
  T mx, my, a, b, c;  // kept for the chain rule of psi
  T opacity, red, green, blue, z;
  int64_t p_begin, p_end;

  Pair(const T* record, T ox, T oy, int64_t tile) {
    mx = record[0] - ox;
    my = record[1] - oy;
    a = record[2];
    b = record[3];
    c = record[4];
    // the torch backend's expressions, term by term (no contraction: -ffp-contract=off)
    psi[0] = a;
    psi[1] = T(2) * b;
    psi[2] = c;
    psi[3] = T(-2) * (a * mx + b * my);
    psi[4] = T(-2) * (b * mx + c * my);
    psi[5] = a * mx * mx + T(2) * b * mx * my + c * my * my;
    opacity = record[5];
    red = record[6];
    green = record[7];
    blue = record[8];
    z = record[9];
    const T first = std::min(std::max(std::ceil(record[10] - oy), T(0)), T(tile));
    const T last = std::min(std::max(std::floor(record[11] - oy), T(-1)), T(tile - 1));
    p_begin = static_cast<int64_t>(first) * tile;
    p_end = std::max(p_begin, (static_cast<int64_t>(last) + 1) * tile);
  }
};

// dᵀΣ⁻¹d at pixel p: one chain of fused multiply-adds in MKL's order (see the file comment)
template <typename T>
inline T exponent(const T* psi, const T* phi, int64_t P, int64_t p) {
  T m = psi[0] * phi[p];
  m = std::fma(psi[1], phi[P + p], m);
  m = std::fma(psi[2], phi[2 * P + p], m);
  m = std::fma(psi[3], phi[3 * P + p], m);
  m = std::fma(psi[4], phi[4 * P + p], m);
  return std::fma(psi[5], phi[5 * P + p], m);
}

template <typename T>
int64_t bin_count(const FrArgs& args) {
  const Grid grid(args);
  const T* mean2d = static_cast<const T*>(args.mean2d);
  const T* radius = static_cast<const T*>(args.radius);
  const int64_t total = args.cameras * args.gaussians;
  const T size_x = static_cast<T>(args.width - 1), size_y = static_cast<T>(args.height - 1);
  const T tile = static_cast<T>(grid.tile);
  int32_t* count = args.pair_count;
  int64_t sum = 0;
#pragma omp parallel for schedule(static) num_threads(args.num_threads) reduction(+ : sum)
  for (int64_t g = 0; g < total; ++g) {
    count[g] = 0;
    if (!args.visible[g]) continue;
    // footprint_tiles() in project.py, operation for operation
    const T cx = mean2d[2 * g], cy = mean2d[2 * g + 1];
    const T rx = radius[2 * g], ry = radius[2 * g + 1];
    T lo_x = std::ceil(cx - rx - T(0.5)), lo_y = std::ceil(cy - ry - T(0.5));
    T hi_x = std::floor(cx + rx - T(0.5)), hi_y = std::floor(cy + ry - T(0.5));
    const bool hit = hi_x >= T(0) && hi_y >= T(0) && lo_x <= size_x && lo_y <= size_y &&
                     hi_x >= lo_x && hi_y >= lo_y;
    if (!hit) continue;
    lo_x = std::min(std::max(lo_x, T(0)), size_x);
    lo_y = std::min(std::max(lo_y, T(0)), size_y);
    hi_x = std::min(std::max(hi_x, T(0)), size_x);
    hi_y = std::min(std::max(hi_y, T(0)), size_y);
    int32_t* r = args.rect + 4 * g;
    r[0] = static_cast<int32_t>(std::floor(lo_x / tile));
    r[1] = static_cast<int32_t>(std::floor(lo_y / tile));
    r[2] = static_cast<int32_t>(std::floor(hi_x / tile));
    r[3] = static_cast<int32_t>(std::floor(hi_y / tile));
    const int64_t n = int64_t(r[2] - r[0] + 1) * int64_t(r[3] - r[1] + 1);
    count[g] = static_cast<int32_t>(std::min<int64_t>(n, INT32_MAX));
    sum += n;
  }
  return sum;
}

template <typename T>
struct DepthKey;
template <>
struct DepthKey<float> {
  using type = uint32_t;
};
template <>
struct DepthKey<double> {
  using type = uint64_t;
};

// Stable LSD radix sort of ids by depth. Depths of binned Gaussians are > 0.01, and the bits of
// positive IEEE numbers sort like their values; stability keeps ties in index order.
template <typename T>
void sort_by_depth(std::vector<int32_t>& ids, const T* depth) {
  using Key = typename DepthKey<T>::type;
  const size_t n = ids.size();
  if (n < 2) return;
  std::vector<Key> keys(n), keys_tmp(n);
  std::vector<int32_t> ids_tmp(n);
  for (size_t i = 0; i < n; ++i) std::memcpy(&keys[i], &depth[ids[i]], sizeof(Key));
  for (unsigned shift = 0; shift < 8 * sizeof(Key); shift += 8) {
    size_t bucket[257] = {0};
    for (size_t i = 0; i < n; ++i) ++bucket[((keys[i] >> shift) & 255) + 1];
    if (bucket[((keys[0] >> shift) & 255) + 1] == n) continue;  // one digit: nothing moves
    for (int d = 0; d < 256; ++d) bucket[d + 1] += bucket[d];
    for (size_t i = 0; i < n; ++i) {
      const size_t to = bucket[(keys[i] >> shift) & 255]++;
      keys_tmp[to] = keys[i];
      ids_tmp[to] = ids[i];
    }
    keys.swap(keys_tmp);
    ids.swap(ids_tmp);
  }
}

template <typename T>
void bin_fill(const FrArgs& args) {
  const Grid grid(args);
  const int64_t N = args.gaussians;
  const T* depth = static_cast<const T*>(args.depth);

  // every binned Gaussian, camera by camera, each camera's in depth order
  std::vector<int32_t> order;
  for (int64_t c = 0; c < args.cameras; ++c) {
    std::vector<int32_t> ids;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t g = c * N + n;
      if (args.pair_count[g] > 0) ids.push_back(static_cast<int32_t>(g));
    }
    sort_by_depth(ids, depth);
    order.insert(order.end(), ids.begin(), ids.end());
  }
  const int64_t M = static_cast<int64_t>(order.size());
  // From here on everything is indexed by record (depth order), so that the passes below and the
  // backward pass read their per-Gaussian data in sequence.
  std::fill(args.rank_gauss, args.rank_gauss + args.cameras * N, -1);
  std::fill(args.pair_offset, args.pair_offset + args.cameras * N + 1, 0);
  {
    const std::vector<int32_t> rect(args.rect, args.rect + 4 * args.cameras * N);
    int64_t slot = 0;
    for (int64_t rank = 0; rank < M; ++rank) {
      const int64_t g = order[rank];
      args.rank_gauss[rank] = static_cast<int32_t>(g);
      std::copy_n(rect.data() + 4 * g, 4, args.rect + 4 * rank);
      args.pair_offset[rank] = slot;
      slot += args.pair_count[g];
    }
    std::fill(args.pair_offset + M, args.pair_offset + args.cameras * N + 1, slot);
  }
  {
    const T* mean2d = static_cast<const T*>(args.mean2d);
    const T* conic = static_cast<const T*>(args.conic);
    const T* radius = static_cast<const T*>(args.radius);
    const T* opacities = static_cast<const T*>(args.opacities);
    const T* colors = static_cast<const T*>(args.colors);
    T* packed = static_cast<T*>(args.packed);
#pragma omp parallel for schedule(static) num_threads(args.num_threads)
    for (int64_t rank = 0; rank < M; ++rank) {
      const int64_t g = order[rank], n = g % N;
      T* r = packed + rank * kRecord;
      r[0] = mean2d[2 * g];
      r[1] = mean2d[2 * g + 1];
      r[2] = conic[3 * g];
      r[3] = conic[3 * g + 1];
      r[4] = conic[3 * g + 2];
      r[5] = opacities[n];
      r[6] = colors[3 * n];
      r[7] = colors[3 * n + 1];
      r[8] = colors[3 * n + 2];
      r[9] = depth[g];
      // the footprint's rows, widened by a margin far above rounding (a row just outside has
      // m above reach·(1 + 2e-3)), so that the per-pixel test alone decides
      const T ry = radius[2 * g + 1], margin = T(1e-3) * (T(1) + ry);
      r[10] = r[1] - ry - T(0.5) - margin;
      r[11] = r[1] + ry - T(0.5) + margin;
    }
  }

  // each chunk of that order counts its pairs per tile, so that every chunk can then write its
  // pairs behind those of the chunks before it: the lists come out in depth order
  const int64_t chunks = std::max<int64_t>(1, args.num_threads);
  std::vector<int64_t> hist(chunks * grid.tiles, 0);
  auto chunk_begin = [&](int64_t k) { return M * k / chunks; };
#pragma omp parallel for schedule(static, 1) num_threads(args.num_threads)
  for (int64_t k = 0; k < chunks; ++k) {
    int64_t* h = hist.data() + k * grid.tiles;
    for (int64_t i = chunk_begin(k); i < chunk_begin(k + 1); ++i) {
      const int64_t g = order[i];
      const int32_t* r = args.rect + 4 * i;
      const int64_t base = (g / N) * grid.per_camera;
      for (int64_t ty = r[1]; ty <= r[3]; ++ty)
        for (int64_t tx = r[0]; tx <= r[2]; ++tx) ++h[base + ty * grid.tiles_x + tx];
    }
  }
  int64_t pos = 0;
  for (int64_t t = 0; t < grid.tiles; ++t) {
    args.tile_start[t] = pos;
    for (int64_t k = 0; k < chunks; ++k) {
      const int64_t n = hist[k * grid.tiles + t];
      hist[k * grid.tiles + t] = pos;
      pos += n;
    }
  }
  args.tile_start[grid.tiles] = pos;
#pragma omp parallel for schedule(static, 1) num_threads(args.num_threads)
  for (int64_t k = 0; k < chunks; ++k) {
    int64_t* next = hist.data() + k * grid.tiles;
    for (int64_t i = chunk_begin(k); i < chunk_begin(k + 1); ++i) {
      const int64_t g = order[i];
      const int32_t* r = args.rect + 4 * i;
      const int64_t base = (g / N) * grid.per_camera;
      int64_t slot = args.pair_offset[i];
      for (int64_t ty = r[1]; ty <= r[3]; ++ty) {
        for (int64_t tx = r[0]; tx <= r[2]; ++tx) {
          const int64_t at = next[base + ty * grid.tiles_x + tx]++;
          args.tile_rank[at] = static_cast<int32_t>(i);
          args.pair_slot[slot++] = static_cast<int32_t>(at);
        }
      }
    }
  }
}

// Which pixels of tile t lie inside the image, and where they are.
struct TilePixels {
  int64_t camera, x0, y0, w, h;
  TilePixels(const FrArgs& args, const Grid& grid, int64_t t) {
    camera = t / grid.per_camera;
    const int64_t within = t % grid.per_camera;
    x0 = (within % grid.tiles_x) * grid.tile;
    y0 = (within / grid.tiles_x) * grid.tile;
    w = std::min(grid.tile, args.width - x0);
    h = std::min(grid.tile, args.height - y0);
  }
  int64_t image_index(const FrArgs& args, int64_t px, int64_t py) const {
    return (camera * args.height + y0 + py) * args.width + x0 + px;
  }
};

template <typename T>
inline bool row_running(const T* trans, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (trans[i] > T(0)) return true;
  return false;
}

// kTile > 0 fixes the tile edge at compile time (the default 8: one AVX2 float vector per row);
// 0 takes it from args.
template <typename T, int kTile>
void forward(const FrArgs& args) {
  const Grid grid(args);
  const Consts<T> k(args);
  const int64_t ts = kTile > 0 ? kTile : grid.tile, P = ts * ts;
  const std::vector<T> phi_v = pixel_features<T>(ts);
  const T* phi = phi_v.data();
  const T* packed = static_cast<const T*>(args.packed);
  const T* bg = static_cast<const T*>(args.background);
  T* rgb = static_cast<T*>(args.rgb);
  T* alpha_out = static_cast<T*>(args.alpha);
  T* depth_out = static_cast<T*>(args.depth_out);
  T* t_final = static_cast<T*>(args.t_final);

#pragma omp parallel num_threads(args.num_threads)
  {
    // trans holds each pixel's transmittance, negated once the pixel has stopped
    std::vector<T> buf(6 * P);
    T *trans = buf.data(), *acc_r = trans + P, *acc_g = acc_r + P, *acc_b = acc_g + P,
      *acc_a = acc_b + P, *acc_z = acc_a + P;
    std::vector<int32_t> last(P);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < grid.tiles; ++t) {
      const TilePixels tp(args, grid, t);
      const int64_t start = args.tile_start[t], count = args.tile_start[t + 1] - start;
      const T ox = static_cast<T>(tp.x0), oy = static_cast<T>(tp.y0);
      for (int64_t p = 0; p < P; ++p) {
        // pixels of edge tiles outside the image start stopped, so a tile can stop early
        const bool inside = p / ts < tp.h && p % ts < tp.w;
        trans[p] = inside ? T(1) : T(-1);
        acc_r[p] = acc_g[p] = acc_b[p] = acc_a[p] = acc_z[p] = T(0);
        last[p] = inside ? static_cast<int32_t>(count) : 0;
      }
      // pixels still running lie in rows [row_begin, row_end)
      int64_t row_begin = 0, row_end = tp.h;
      for (int64_t i = 0; i < count && row_begin < row_end; ++i) {
        if (i + kPrefetch < count) prefetch_record(packed, args.tile_rank[start + i + kPrefetch]);
        const Pair<T> q(packed + int64_t(args.tile_rank[start + i]) * kRecord, ox, oy, ts);
        const int64_t p_begin = std::max(q.p_begin, row_begin * ts);
        const int64_t p_end = std::min(q.p_end, row_end * ts);
        T stops = T(0);
#pragma omp simd reduction(+ : stops)
        for (int64_t p = p_begin; p < p_end; ++p) {
          const T m = exponent(q.psi, phi, P, p);
          const T raw = q.opacity * fast_exp(std::max(T(-0.5) * m, k.exp_floor));
          const T a = std::min(raw, k.alpha_max);
          const T t = trans[p];
          const bool use = (m <= k.mahalanobis_max) & (a >= k.alpha_min) & (t > T(0));
          const T t_next = t * (T(1) - a);
          const bool stop = use & (t_next < k.t_min);
          const bool add = use & !stop;
          const T w = add ? a * t : T(0);
          acc_r[p] += w * q.red;
          acc_g[p] += w * q.green;
          acc_b[p] += w * q.blue;
          acc_a[p] += w;
          acc_z[p] += w * q.z;
          // one unconditional store (a conditional one becomes a masked store, slow on AMD):
          // t·(1 - α) is t_next bit for bit, and ·(-1) marks a stop
          trans[p] = t * (add ? T(1) - a : (stop ? T(-1) : T(1)));
          stops += stop ? T(1) : T(0);
        }
        if (stops > T(0)) {
          for (int64_t p = p_begin; p < p_end; ++p)
            if (trans[p] < T(0) && last[p] == count) last[p] = static_cast<int32_t>(i);
          while (row_begin < row_end && !row_running(trans + row_begin * ts, ts)) ++row_begin;
          while (row_end > row_begin && !row_running(trans + (row_end - 1) * ts, ts)) --row_end;
        }
      }
      for (int64_t py = 0; py < tp.h; ++py) {
        for (int64_t px = 0; px < tp.w; ++px) {
          const int64_t p = py * ts + px, at = tp.image_index(args, px, py);
          const T t_end = std::abs(trans[p]);
          rgb[3 * at] = acc_r[p] + t_end * bg[0];
          rgb[3 * at + 1] = acc_g[p] + t_end * bg[1];
          rgb[3 * at + 2] = acc_b[p] + t_end * bg[2];
          alpha_out[at] = acc_a[p];
          depth_out[at] = acc_z[p];
          t_final[at] = t_end;
          args.last[at] = last[p];
        }
      }
    }
  }
}

// d/d(u, v, a, b, c) of the pair's psi, given d/d(psi); in double, as the terms cancel.
template <typename T>
void psi_chain_rule(const Pair<T>& q, const double d_psi[6], T* out) {
  const double mx = q.mx, my = q.my, a = q.a, b = q.b, c = q.c;
  const double d_mx = -2 * a * d_psi[3] - 2 * b * d_psi[4] + 2 * (a * mx + b * my) * d_psi[5];
  const double d_my = -2 * b * d_psi[3] - 2 * c * d_psi[4] + 2 * (b * mx + c * my) * d_psi[5];
  const double d_a = d_psi[0] - 2 * mx * d_psi[3] + mx * mx * d_psi[5];
  const double d_b =
      2 * d_psi[1] - 2 * my * d_psi[3] - 2 * mx * d_psi[4] + 2 * mx * my * d_psi[5];
  const double d_c = d_psi[2] - 2 * my * d_psi[4] + my * my * d_psi[5];
  out[0] = static_cast<T>(d_mx);
  out[1] = static_cast<T>(d_my);
  out[2] = static_cast<T>(d_a);
  out[3] = static_cast<T>(d_b);
  out[4] = static_cast<T>(d_c);
}

template <typename T, int kTile>
void backward_pairs(const FrArgs& args) {
  const Grid grid(args);
  const Consts<T> k(args);
  const int64_t ts = kTile > 0 ? kTile : grid.tile, P = ts * ts;
  const std::vector<T> phi_v = pixel_features<T>(ts);
  const T* phi = phi_v.data();
  const T* packed = static_cast<const T*>(args.packed);
  const T* bg = static_cast<const T*>(args.background);
  const T* g_rgb = static_cast<const T*>(args.grad_rgb);
  const T* g_alpha = static_cast<const T*>(args.grad_alpha);
  const T* g_depth = static_cast<const T*>(args.grad_depth);
  const T* t_final = static_cast<const T*>(args.t_final);
  T* pair_grad = static_cast<T*>(args.pair_grad);

#pragma omp parallel num_threads(args.num_threads)
  {
    std::vector<T> buf(8 * P);
    T *trans = buf.data(), *behind = trans + P, *last = behind + P, *gr = last + P,
      *gg = gr + P, *gb = gg + P, *ga = gb + P, *gz = ga + P;
    std::vector<int64_t> row_last(ts);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < grid.tiles; ++t) {
      const TilePixels tp(args, grid, t);
      const int64_t start = args.tile_start[t], count = args.tile_start[t + 1] - start;
      args.tile_end[t] = 0;
      if (count == 0) continue;
      const T ox = static_cast<T>(tp.x0), oy = static_cast<T>(tp.y0);
      int64_t end = 0;  // no pixel of the tile used pairs at or after this list position
      std::fill(row_last.begin(), row_last.end(), 0);  // the same per row
      for (int64_t p = 0; p < P; ++p) {
        trans[p] = T(1);
        behind[p] = last[p] = gr[p] = gg[p] = gb[p] = ga[p] = gz[p] = T(0);
      }
      for (int64_t py = 0; py < tp.h; ++py) {
        for (int64_t px = 0; px < tp.w; ++px) {
          const int64_t p = py * ts + px, at = tp.image_index(args, px, py);
          trans[p] = t_final[at];
          gr[p] = g_rgb[3 * at];
          gg[p] = g_rgb[3 * at + 1];
          gb[p] = g_rgb[3 * at + 2];
          ga[p] = g_alpha[at];
          gz[p] = g_depth[at];
          // what the loss owes to everything behind the current Gaussian: first the background
          behind[p] = trans[p] * (gr[p] * bg[0] + gg[p] * bg[1] + gb[p] * bg[2]);
          last[p] = static_cast<T>(args.last[at]);
          row_last[py] = std::max<int64_t>(row_last[py], args.last[at]);
          end = std::max<int64_t>(end, args.last[at]);
        }
      }
      args.tile_end[t] = static_cast<int32_t>(end);  // the rows after it stay unwritten
      for (int64_t i = end - 1; i >= 0; --i) {
        if (i >= kPrefetch) prefetch_record(packed, args.tile_rank[start + i - kPrefetch]);
        const Pair<T> q(packed + int64_t(args.tile_rank[start + i]) * kRecord, ox, oy, ts);
        const T index = static_cast<T>(i);
        // only rows with a pixel that used position i or later
        int64_t row_begin = 0, row_end = tp.h;
        while (row_begin < row_end && row_last[row_begin] <= i) ++row_begin;
        while (row_end > row_begin && row_last[row_end - 1] <= i) --row_end;
        const int64_t p_begin = std::max(q.p_begin, row_begin * ts);
        const int64_t p_end = std::min(q.p_end, row_end * ts);
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s_o = 0;
        T s_r = 0, s_g = 0, s_b = 0, s_z = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s_o, s_r, s_g, s_b, s_z)
        for (int64_t p = p_begin; p < p_end; ++p) {
          // the forward's α, bit for bit
          const T m = exponent(q.psi, phi, P, p);
          const T raw = q.opacity * fast_exp(std::max(T(-0.5) * m, k.exp_floor));
          const bool use = (index < last[p]) & (m <= k.mahalanobis_max) &
                           (std::min(raw, k.alpha_max) >= k.alpha_min);
          const T a = use ? std::min(raw, k.alpha_max) : T(0);
          const T inv_one_minus = T(1) / (T(1) - a);
          const T t_before = trans[p] * inv_one_minus;  // T in front of this Gaussian
          const T g = gr[p] * q.red + gg[p] * q.green + gb[p] * q.blue + ga[p] + gz[p] * q.z;
          // dL/dα = T·g - (Σ behind w·g + T_final·g·bg) / (1 - α); zero where α was clamped
          const T d_alpha = t_before * g - behind[p] * inv_one_minus;
          const T d_raw = (use & !(raw > k.alpha_max)) ? d_alpha : T(0);
          const T d_m = d_raw * (T(-0.5) * a);  // α = o·exp(-m/2)
          s0 += d_m * phi[p];
          s1 += d_m * phi[P + p];
          s2 += d_m * phi[2 * P + p];
          s3 += d_m * phi[3 * P + p];
          s4 += d_m * phi[4 * P + p];
          s5 += d_m;
          s_o += d_raw * a;
          const T w = a * t_before;
          s_r += w * gr[p];
          s_g += w * gg[p];
          s_b += w * gb[p];
          s_z += w * gz[p];
          behind[p] += w * g;
          trans[p] = t_before;
        }
        T* out = pair_grad + (start + i) * kPairGrad;
        const double d_psi[6] = {s0, s1, s2, s3, s4, s5};
        psi_chain_rule(q, d_psi, out);
        out[5] = s_o / std::max(q.opacity, T(1e-30));  // dα/do = α/o
        out[6] = s_r;
        out[7] = s_g;
        out[8] = s_b;
        out[9] = s_z;
      }
    }
  }
}

// Calls fn(row) for each gradient row of the Gaussian of record `rank` that the backward pass
// wrote: one per tile of its footprint, unless the tile's pixels had all stopped before it.
template <typename Fn>
inline void for_each_used_row(const FrArgs& args, const Grid& grid, int64_t rank, Fn fn) {
  const int32_t* slot = args.pair_slot + args.pair_offset[rank];
  const int32_t* r = args.rect + 4 * rank;
  const int64_t base = (args.rank_gauss[rank] / args.gaussians) * grid.per_camera;
  for (int64_t ty = r[1]; ty <= r[3]; ++ty) {
    for (int64_t tx = r[0]; tx <= r[2]; ++tx, ++slot) {
      const int64_t tile = base + ty * grid.tiles_x + tx, at = *slot;
      if (at - args.tile_start[tile] < args.tile_end[tile]) fn(at);
    }
  }
}

// Sums each Gaussian's pair gradients, in a fixed order (results are deterministic) and by depth
// (see bin_fill); the opacity and color gradients also sum over cameras.
template <typename T>
void backward_gaussians(const FrArgs& args) {
  const Grid grid(args);
  const int64_t N = args.gaussians, total = args.cameras * N;
  const T* pair_grad = static_cast<const T*>(args.pair_grad);
  T* d_mean2d = static_cast<T*>(args.grad_mean2d);
  T* d_conic = static_cast<T*>(args.grad_conic);
  T* d_depth = static_cast<T*>(args.grad_depth_in);
  T* d_opacity = static_cast<T*>(args.grad_opacities);
  T* d_colors = static_cast<T*>(args.grad_colors);
  std::vector<double> shared(4 * total, 0.0);  // opacity, r, g, b of each camera and Gaussian
#pragma omp parallel num_threads(args.num_threads)
  {
#pragma omp for schedule(static)
    for (int64_t g = 0; g < total; ++g) {
      if (args.pair_count[g] > 0) continue;
      d_mean2d[2 * g] = d_mean2d[2 * g + 1] = d_depth[g] = T(0);
      d_conic[3 * g] = d_conic[3 * g + 1] = d_conic[3 * g + 2] = T(0);
    }
#pragma omp for schedule(static)
    for (int64_t rank = 0; rank < total; ++rank) {
      const int64_t g = args.rank_gauss[rank];
      if (g < 0) continue;  // past the binned Gaussians
      if (rank + kPrefetch < total && args.rank_gauss[rank + kPrefetch] >= 0) {
        // the rows of a Gaussian a few records ahead lie far apart: ask for them now
        for_each_used_row(args, grid, rank + kPrefetch, [&](int64_t at) {
          __builtin_prefetch(pair_grad + at * kPairGrad);
        });
      }
      double sum[kPairGrad] = {0};
      for_each_used_row(args, grid, rank, [&](int64_t at) {
        const T* row = pair_grad + at * kPairGrad;
        for (int j = 0; j < kPairGrad; ++j) sum[j] += row[j];
      });
      d_mean2d[2 * g] = static_cast<T>(sum[0]);
      d_mean2d[2 * g + 1] = static_cast<T>(sum[1]);
      for (int j = 0; j < 3; ++j) d_conic[3 * g + j] = static_cast<T>(sum[2 + j]);
      d_depth[g] = static_cast<T>(sum[9]);
      for (int j = 0; j < 4; ++j) shared[4 * g + j] = sum[5 + j];
    }
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      double sum[4] = {0, 0, 0, 0};
      for (int64_t c = 0; c < args.cameras; ++c)
        for (int j = 0; j < 4; ++j) sum[j] += shared[4 * (c * N + n) + j];
      d_opacity[n] = static_cast<T>(sum[0]);
      for (int j = 0; j < 3; ++j) d_colors[3 * n + j] = static_cast<T>(sum[1 + j]);
    }
  }
}

#ifdef FR_TILE8_AVX2
#include "tile8_avx2.h"
#endif

template <typename T>
void forward_any(const FrArgs& args) {
#ifdef FR_TILE8_AVX2
  if (std::is_same_v<T, float> && args.tile == 8) return avx2::forward(args);
#endif
  if (args.tile == 8)
    forward<T, 8>(args);
  else
    forward<T, 0>(args);
}

template <typename T>
void backward_pairs_any(const FrArgs& args) {
#ifdef FR_TILE8_AVX2
  if (std::is_same_v<T, float> && args.tile == 8) return avx2::backward_pairs(args);
#endif
  if (args.tile == 8)
    backward_pairs<T, 8>(args);
  else
    backward_pairs<T, 0>(args);
}

template <typename T>
void backward(const FrArgs& args) {
  backward_pairs_any<T>(args);
  backward_gaussians<T>(args);
}

}  // namespace

extern "C" {
int64_t fr_bin_count_f32(const FrArgs* a) { return bin_count<float>(*a); }
int64_t fr_bin_count_f64(const FrArgs* a) { return bin_count<double>(*a); }
void fr_bin_fill_f32(const FrArgs* a) { bin_fill<float>(*a); }
void fr_bin_fill_f64(const FrArgs* a) { bin_fill<double>(*a); }
void fr_forward_f32(const FrArgs* a) { forward_any<float>(*a); }
void fr_forward_f64(const FrArgs* a) { forward_any<double>(*a); }
void fr_backward_f32(const FrArgs* a) { backward<float>(*a); }
void fr_backward_f64(const FrArgs* a) { backward<double>(*a); }
}
