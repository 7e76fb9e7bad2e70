// Forward and backward compositing for float32 and 8×8 tiles (the default) with AVX2 and FMA:
// one pixel row of a tile is one 8-lane vector. Included by rasterize.cpp, inside its anonymous
// namespace, after the generic kernels, whose per-pixel arithmetic this repeats operation for
// operation (the exponent, exp, α and the cuts give the same bits). What it adds: rows a pair
// cannot touch or whose pixels have all stopped are skipped after the exponent alone, and the
// backward pass sums its eleven per-pair gradients in vector registers, reduced once per pair.
// (rasterize.cpp includes <immintrin.h>.)

namespace avx2 {

using V = __m256;

inline V broadcast(float x) { return _mm256_set1_ps(x); }

// fast_exp(float) in rasterize.cpp, eight at a time
inline V exp8(V x) {
  const V magic = broadcast(12582912.0f);
  const V n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, broadcast(1.44269504088896341f)), magic),
                            magic);
  V r = _mm256_sub_ps(x, _mm256_mul_ps(n, broadcast(0.693359375f)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(n, broadcast(-2.12194440e-4f)));
  V p = broadcast(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, broadcast(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, broadcast(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, broadcast(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, broadcast(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, broadcast(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), broadcast(1.0f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

// The sums of the lanes of eight vectors, as one vector.
inline V sum_lanes(V a0, V a1, V a2, V a3, V a4, V a5, V a6, V a7) {
  const V u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  const V u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

inline bool none(V mask) { return _mm256_testz_ps(mask, mask); }

// φ of the 8×8 tile: x² and x per column, xy per pixel, y² and y per row
struct Features {
  V x2, x, xy[8];
  float y2[8], y[8];
  Features() {
    alignas(32) float col[8], col2[8];
    for (int i = 0; i < 8; ++i) {
      col[i] = static_cast<float>(i) + 0.5f;
      col2[i] = col[i] * col[i];
    }
    x = _mm256_load_ps(col);
    x2 = _mm256_load_ps(col2);
    for (int row = 0; row < 8; ++row) {
      y[row] = static_cast<float>(row) + 0.5f;
      y2[row] = y[row] * y[row];
      xy[row] = _mm256_mul_ps(x, broadcast(y[row]));
    }
  }
  // exponent() in rasterize.cpp for one row: the same chain of fused multiply-adds
  V exponent(const float* psi, int row) const {
    V m = _mm256_mul_ps(broadcast(psi[0]), x2);
    m = _mm256_fmadd_ps(broadcast(psi[1]), xy[row], m);
    m = _mm256_fmadd_ps(broadcast(psi[2]), broadcast(y2[row]), m);
    m = _mm256_fmadd_ps(broadcast(psi[3]), x, m);
    m = _mm256_fmadd_ps(broadcast(psi[4]), broadcast(y[row]), m);
    return _mm256_fmadd_ps(broadcast(psi[5]), broadcast(1.0f), m);
  }
};

inline void forward(const FrArgs& args) {
  const Grid grid(args);
  const Consts<float> k(args);
  const Features f;
  const float* packed = static_cast<const float*>(args.packed);
  const float* bg = static_cast<const float*>(args.background);
  float* rgb = static_cast<float*>(args.rgb);
  float* alpha_out = static_cast<float*>(args.alpha);
  float* depth_out = static_cast<float*>(args.depth_out);
  float* t_final = static_cast<float*>(args.t_final);
  const V zero = _mm256_setzero_ps(), one = broadcast(1.0f), sign = broadcast(-0.0f);

#pragma omp parallel num_threads(args.num_threads)
  {
    // transmittance (negated once a pixel has stopped) and accumulated r, g, b, alpha, depth
    alignas(32) float trans[64], acc[5][64];
    int32_t last[64];
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < grid.tiles; ++t) {
      const TilePixels tp(args, grid, t);
      const int64_t start = args.tile_start[t], count = args.tile_start[t + 1] - start;
      const float ox = static_cast<float>(tp.x0), oy = static_cast<float>(tp.y0);
      for (int p = 0; p < 64; ++p) {
        const bool inside = p / 8 < tp.h && p % 8 < tp.w;
        trans[p] = inside ? 1.0f : -1.0f;
        for (auto& a : acc) a[p] = 0.0f;
        last[p] = inside ? static_cast<int32_t>(count) : 0;
      }
      int64_t row_begin = 0, row_end = tp.h;
      for (int64_t i = 0; i < count && row_begin < row_end; ++i) {
        if (i + kPrefetch < count) prefetch_record(packed, args.tile_rank[start + i + kPrefetch]);
        const Pair<float> q(packed + int64_t(args.tile_rank[start + i]) * kRecord, ox, oy, 8);
        const V o = broadcast(q.opacity), red = broadcast(q.red), green = broadcast(q.green),
                blue = broadcast(q.blue), z = broadcast(q.z);
        bool stopped = false;
        const int64_t last_row = std::min(q.p_end / 8, row_end);
        for (int64_t row = std::max(q.p_begin / 8, row_begin); row < last_row; ++row) {
          float* tr = trans + 8 * row;
          const V m = f.exponent(q.psi, static_cast<int>(row));
          const V t_in = _mm256_load_ps(tr);
          const V live = _mm256_and_ps(_mm256_cmp_ps(m, broadcast(k.mahalanobis_max), _CMP_LE_OQ),
                                       _mm256_cmp_ps(t_in, zero, _CMP_GT_OQ));
          if (none(live)) continue;
          const V raw = _mm256_mul_ps(
              o, exp8(_mm256_max_ps(_mm256_mul_ps(broadcast(-0.5f), m), broadcast(k.exp_floor))));
          const V a = _mm256_min_ps(raw, broadcast(k.alpha_max));
          const V use = _mm256_and_ps(live, _mm256_cmp_ps(a, broadcast(k.alpha_min), _CMP_GE_OQ));
          const V t_next = _mm256_mul_ps(t_in, _mm256_sub_ps(one, a));
          const V stop = _mm256_and_ps(use, _mm256_cmp_ps(t_next, broadcast(k.t_min), _CMP_LT_OQ));
          const V add = _mm256_andnot_ps(stop, use);
          const V w = _mm256_and_ps(add, _mm256_mul_ps(a, t_in));
          const V values[5] = {red, green, blue, one, z};
          for (int c = 0; c < 5; ++c) {
            float* out = acc[c] + 8 * row;
            _mm256_store_ps(out, _mm256_add_ps(_mm256_load_ps(out), _mm256_mul_ps(w, values[c])));
          }
          const V t_out = _mm256_blendv_ps(_mm256_blendv_ps(t_in, t_next, add),
                                           _mm256_xor_ps(t_in, sign), stop);
          _mm256_store_ps(tr, t_out);
          if (int bits = _mm256_movemask_ps(stop)) {
            stopped = true;
            for (; bits; bits &= bits - 1)
              last[8 * row + __builtin_ctz(bits)] = static_cast<int32_t>(i);
          }
        }
        if (stopped) {
          while (row_begin < row_end && !row_running(trans + row_begin * 8, 8)) ++row_begin;
          while (row_end > row_begin && !row_running(trans + (row_end - 1) * 8, 8)) --row_end;
        }
      }
      for (int64_t py = 0; py < tp.h; ++py) {
        for (int64_t px = 0; px < tp.w; ++px) {
          const int64_t p = py * 8 + px, at = tp.image_index(args, px, py);
          const float t_end = std::abs(trans[p]);
          for (int c = 0; c < 3; ++c) rgb[3 * at + c] = acc[c][p] + t_end * bg[c];
          alpha_out[at] = acc[3][p];
          depth_out[at] = acc[4][p];
          t_final[at] = t_end;
          args.last[at] = last[p];
        }
      }
    }
  }
}

inline void backward_pairs(const FrArgs& args) {
  const Grid grid(args);
  const Consts<float> k(args);
  const Features f;
  const float* packed = static_cast<const float*>(args.packed);
  const float* bg = static_cast<const float*>(args.background);
  const float* g_rgb = static_cast<const float*>(args.grad_rgb);
  const float* g_alpha = static_cast<const float*>(args.grad_alpha);
  const float* g_depth = static_cast<const float*>(args.grad_depth);
  const float* t_final = static_cast<const float*>(args.t_final);
  float* pair_grad = static_cast<float*>(args.pair_grad);
  const V zero = _mm256_setzero_ps(), one = broadcast(1.0f);

#pragma omp parallel num_threads(args.num_threads)
  {
    // per pixel: transmittance in front of the current Gaussian, the loss owed to what lies
    // behind it, the list position where it stopped, and dL/d(r, g, b, alpha, depth)
    alignas(32) float trans[64], behind[64], last[64], grad[5][64];
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < grid.tiles; ++t) {
      const TilePixels tp(args, grid, t);
      const int64_t start = args.tile_start[t], count = args.tile_start[t + 1] - start;
      args.tile_end[t] = 0;
      if (count == 0) continue;
      const float ox = static_cast<float>(tp.x0), oy = static_cast<float>(tp.y0);
      int64_t end = 0, row_last[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int p = 0; p < 64; ++p) {
        trans[p] = 1.0f;
        behind[p] = last[p] = 0.0f;
        for (auto& g : grad) g[p] = 0.0f;
      }
      for (int64_t py = 0; py < tp.h; ++py) {
        for (int64_t px = 0; px < tp.w; ++px) {
          const int64_t p = py * 8 + px, at = tp.image_index(args, px, py);
          trans[p] = t_final[at];
          for (int c = 0; c < 3; ++c) grad[c][p] = g_rgb[3 * at + c];
          grad[3][p] = g_alpha[at];
          grad[4][p] = g_depth[at];
          behind[p] = trans[p] * (grad[0][p] * bg[0] + grad[1][p] * bg[1] + grad[2][p] * bg[2]);
          last[p] = static_cast<float>(args.last[at]);
          row_last[py] = std::max<int64_t>(row_last[py], args.last[at]);
          end = std::max<int64_t>(end, args.last[at]);
        }
      }
      args.tile_end[t] = static_cast<int32_t>(end);  // the rows after it stay unwritten
      for (int64_t i = end - 1; i >= 0; --i) {
        if (i >= kPrefetch) prefetch_record(packed, args.tile_rank[start + i - kPrefetch]);
        const Pair<float> q(packed + int64_t(args.tile_rank[start + i]) * kRecord, ox, oy, 8);
        const V index = broadcast(static_cast<float>(i));
        const V o = broadcast(q.opacity), red = broadcast(q.red), green = broadcast(q.green),
                blue = broadcast(q.blue), z = broadcast(q.z);
        V s0 = zero, s1 = zero, s2 = zero, s3 = zero, s4 = zero, s5 = zero, s_o = zero;
        V s_r = zero, s_g = zero, s_b = zero, s_z = zero;
        const int64_t last_row = std::min<int64_t>(q.p_end / 8, tp.h);
        for (int64_t row = q.p_begin / 8; row < last_row; ++row) {
          if (row_last[row] <= i) continue;
          const V m = f.exponent(q.psi, static_cast<int>(row));
          const V live =
              _mm256_and_ps(_mm256_cmp_ps(index, _mm256_load_ps(last + 8 * row), _CMP_LT_OQ),
                            _mm256_cmp_ps(m, broadcast(k.mahalanobis_max), _CMP_LE_OQ));
          if (none(live)) continue;
          const V raw = _mm256_mul_ps(
              o, exp8(_mm256_max_ps(_mm256_mul_ps(broadcast(-0.5f), m), broadcast(k.exp_floor))));
          const V a_min = _mm256_min_ps(raw, broadcast(k.alpha_max));
          const V use =
              _mm256_and_ps(live, _mm256_cmp_ps(a_min, broadcast(k.alpha_min), _CMP_GE_OQ));
          const V a = _mm256_and_ps(use, a_min);
          const V inv = _mm256_div_ps(one, _mm256_sub_ps(one, a));
          float* tr = trans + 8 * row;
          float* be = behind + 8 * row;
          const V t_before = _mm256_mul_ps(_mm256_load_ps(tr), inv);
          const V gr = _mm256_load_ps(grad[0] + 8 * row), gg = _mm256_load_ps(grad[1] + 8 * row),
                  gb = _mm256_load_ps(grad[2] + 8 * row), gz = _mm256_load_ps(grad[4] + 8 * row);
          V g = _mm256_add_ps(_mm256_mul_ps(gr, red), _mm256_mul_ps(gg, green));
          g = _mm256_add_ps(_mm256_add_ps(g, _mm256_mul_ps(gb, blue)),
                            _mm256_load_ps(grad[3] + 8 * row));
          g = _mm256_add_ps(g, _mm256_mul_ps(gz, z));
          const V be_in = _mm256_load_ps(be);
          const V d_alpha = _mm256_sub_ps(_mm256_mul_ps(t_before, g), _mm256_mul_ps(be_in, inv));
          const V clamped = _mm256_cmp_ps(raw, broadcast(k.alpha_max), _CMP_GT_OQ);
          const V d_raw = _mm256_and_ps(_mm256_andnot_ps(clamped, use), d_alpha);
          const V d_m = _mm256_mul_ps(d_raw, _mm256_mul_ps(broadcast(-0.5f), a));
          s0 = _mm256_fmadd_ps(d_m, f.x2, s0);
          s1 = _mm256_fmadd_ps(d_m, f.xy[row], s1);
          s2 = _mm256_fmadd_ps(d_m, broadcast(f.y2[row]), s2);
          s3 = _mm256_fmadd_ps(d_m, f.x, s3);
          s4 = _mm256_fmadd_ps(d_m, broadcast(f.y[row]), s4);
          s5 = _mm256_add_ps(s5, d_m);
          s_o = _mm256_fmadd_ps(d_raw, a, s_o);
          const V w = _mm256_mul_ps(a, t_before);
          s_r = _mm256_fmadd_ps(w, gr, s_r);
          s_g = _mm256_fmadd_ps(w, gg, s_g);
          s_b = _mm256_fmadd_ps(w, gb, s_b);
          s_z = _mm256_fmadd_ps(w, gz, s_z);
          _mm256_store_ps(be, _mm256_fmadd_ps(w, g, be_in));
          _mm256_store_ps(tr, t_before);
        }
        alignas(32) float sums[16];
        _mm256_store_ps(sums, sum_lanes(s0, s1, s2, s3, s4, s5, s_o, s_r));
        _mm256_store_ps(sums + 8, sum_lanes(s_g, s_b, s_z, zero, zero, zero, zero, zero));
        float* out = pair_grad + (start + i) * kPairGrad;
        const double d_psi[6] = {sums[0], sums[1], sums[2], sums[3], sums[4], sums[5]};
        psi_chain_rule(q, d_psi, out);
        out[5] = sums[6] / std::max(q.opacity, 1e-30f);  // dα/do = α/o
        for (int c = 0; c < 4; ++c) out[6 + c] = sums[7 + c];
      }
    }
  }
}

}  // namespace avx2
