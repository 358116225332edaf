#pragma once
// The tensor-core pieces the prefill attention and the column sums share: 64-row tiles of a
// segment's rows in shared memory (cp.async, 16-byte chunks XOR-swizzled by row so that an
// ldmatrix of 8 rows hits 8 different bank groups), query rows as mma A fragments, and a
// tile's scores S = Q K^T as C fragments (keys 8n..8n+7 in s[n]).
#include "backend/cuda/tensor_core.cuh"

namespace kvp::cuda {

constexpr int kKeyTile = 64;  // rows a tile

template <int D>
constexpr int kTileBytes = kKeyTile* D * 2;  // one tile of 16-bit rows

// Byte offset of 16-byte chunk c of row r in a tile of `chunks`-chunk rows.
__device__ __forceinline__ uint32_t swizzled(int r, int c, int chunks) {
  return static_cast<uint32_t>((r * chunks + (c ^ (r & 7))) * 16);
}

// Rows [r0, r0 + kKeyTile) of a segment's 16-bit rows (src: its row 0) into a tile, by the
// block's THREADS threads; rows at or past `end` are zero-filled.
template <int D, int THREADS>
__device__ __forceinline__ void load_tile(uint8_t* tile, const uint8_t* src, int64_t r0,
                                          int64_t end) {
  constexpr int kChunks = D / 8;
  for (int e = threadIdx.x; e < kKeyTile * kChunks; e += THREADS) {
    const int r = e / kChunks, c = e % kChunks;
    const bool valid = r0 + r < end;
    const size_t at = static_cast<size_t>(valid ? r0 + r : 0) * D * 2 + c * 16;
    cp_async16(tile + swizzled(r, c, kChunks), src + at, valid);
  }
}

// The A fragments of this lane's two rows (row0, row0 + 8 of a 16-row tile; null: zeros),
// rounded to T. Term n > 0 gives instead what the first n terms leave out, rounded again:
// three terms of bf16 carry about 24 significant bits, an f32's, for sums that need f32
// scores from a 16-bit tensor-core product.
template <typename T, int D>
__device__ __forceinline__ void a_fragments(const float* row0, const float* row1,
                                            uint32_t (&qf)[D / 16][4], int term = 0) {
  const int t = threadIdx.x % 4;
  auto pair = [term](const float* row, int col) {
    float2 x = row ? *reinterpret_cast<const float2*>(row + col) : make_float2(0.f, 0.f);
    for (int i = 0; i < term; ++i) {
      const float2 r = Mma<T>::unpack(Mma<T>::pack(x.x, x.y));
      x = make_float2(x.x - r.x, x.y - r.y);
    }
    return Mma<T>::pack(x.x, x.y);
  };
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int col = kk * 16 + 2 * t;
    qf[kk][0] = pair(row0, col);
    qf[kk][1] = pair(row1, col);
    qf[kk][2] = pair(row0, col + 8);
    qf[kk][3] = pair(row1, col + 8);
  }
}

// s += Q K^T for NK keys of the tile at shared address ks, from its row key0.
template <typename T, int D, int NK = kKeyTile>
__device__ __forceinline__ void tile_scores(const uint32_t (&qf)[D / 16][4], uint32_t ks,
                                            float (&s)[NK / 8][4], int key0 = 0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < NK / 16; ++np) {
      uint32_t b[4];
      const int r = key0 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
      const int c = kk * 2 + ((lane >> 3) & 1);
      ldmatrix_x4(b, ks + swizzled(r, c, D / 8));
      Mma<T>::run(s[2 * np], qf[kk], b[0], b[1]);
      Mma<T>::run(s[2 * np + 1], qf[kk], b[2], b[3]);
    }
  }
}

template <int N>
__device__ __forceinline__ void zero(float (&s)[N][4]) {
#pragma unroll
  for (int n = 0; n < N; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
}

// The online-softmax state of a warp's 16 query rows; this lane holds rows group and
// group + 8 (index 0 and 1), with l summed over its own columns until the end.
template <int D>
struct RowState {
  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};
};

// Scales NK keys' scores (keys k0..) to the log2 domain, masks (when mask) the keys at or past
// lim[i] for this lane's row i, and folds them into the running state: s becomes their
// probabilities relative to the new maximum.
template <int D, int NK = kKeyTile>
__device__ __forceinline__ void softmax_update(float (&s)[NK / 8][4], RowState<D>& st, int64_t k0,
                                               const int64_t (&lim)[2], bool mask,
                                               float scale_log2) {
  const int t = threadIdx.x % 4;
  float mx[2] = {st.m[0], st.m[1]};
#pragma unroll
  for (int n = 0; n < NK / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t key = k0 + n * 8 + 2 * t + (e & 1);
      float x = s[n][e] * scale_log2;
      if (mask && key >= lim[e >> 1]) x = -INFINITY;
      s[n][e] = x;
      mx[e >> 1] = fmaxf(mx[e >> 1], x);
    }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    const float ref = mx[i] == -INFINITY ? 0.f : mx[i];
    const float corr = exp2f(st.m[i] - ref);
    st.m[i] = mx[i];
    st.l[i] *= corr;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      st.o[d][2 * i] *= corr;
      st.o[d][2 * i + 1] *= corr;
    }
    mx[i] = ref;
  }
#pragma unroll
  for (int n = 0; n < NK / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float p = exp2f(s[n][e] - mx[e >> 1]);
      st.l[e >> 1] += p;
      s[n][e] = p;
    }
}

// O += P V for NK keys of the tile at shared address vs, from its row key0. The C fragments of
// two neighbouring 8-key score tiles are exactly the A fragment of a 16-key step, so P never
// leaves registers. TERMS = 2 adds what rounding P to 16 bits left out, as a second product
// (about 16 significant bits for P instead of 8).
template <typename T, int D, int NK = kKeyTile, int TERMS = 1>
__device__ __forceinline__ void tile_pv(const float (&s)[NK / 8][4], uint32_t vs, RowState<D>& st,
                                        int key0 = 0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < NK / 16; ++kk) {
    uint32_t pa[TERMS][4];
    const float* p[4] = {&s[2 * kk][0], &s[2 * kk][2], &s[2 * kk + 1][0], &s[2 * kk + 1][2]};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      pa[0][i] = Mma<T>::pack(p[i][0], p[i][1]);
      if constexpr (TERMS == 2) {
        const float2 r = Mma<T>::unpack(pa[0][i]);
        pa[TERMS - 1][i] = Mma<T>::pack(p[i][0] - r.x, p[i][1] - r.y);
      }
    }
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      const int r = key0 + kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
      const int c = dp * 2 + (lane >> 4);
      ldmatrix_x4_trans(b, vs + swizzled(r, c, D / 8));
#pragma unroll
      for (int term = 0; term < TERMS; ++term) {
        Mma<T>::run(st.o[2 * dp], pa[term], b[0], b[1]);
        Mma<T>::run(st.o[2 * dp + 1], pa[term], b[2], b[3]);
      }
    }
  }
}

}  // namespace kvp::cuda
