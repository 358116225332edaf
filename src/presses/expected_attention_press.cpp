// expected_attention: score each key by the attention it should receive from future queries,
// modelled as a Gaussian fitted to the context's pre-RoPE queries and rotated by the average
// RoPE rotation of the next n_future_positions positions (kvpress's ExpectedAttentionPress).
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/rope_freq.h"
#include "core/error.h"
#include "presses/press_util.h"

namespace kvp {

namespace {

// Averaging the rotation costs n_future_positions * head_dim / 2 sines and cosines per layer;
// 64k positions (a long context's worth) take a few seconds, 2^31 would take hours.
constexpr int64_t kMaxFuturePositions = 65536;

class ExpectedAttentionPress : public ScorerPress {
 public:
  ExpectedAttentionPress(double ratio, int64_t n_future, int64_t n_sink, bool use_covariance,
                         bool use_vnorm, double epsilon)
      : ScorerPress(ratio),
        n_future_(n_future),
        n_sink_(n_sink),
        use_covariance_(use_covariance),
        use_vnorm_(use_vnorm),
        epsilon_(epsilon) {
    check(n_future > 0 && n_future <= kMaxFuturePositions,
          "expected_attention: n_future_positions must be in [1, 65536]");
    check(n_sink >= 0, "expected_attention: n_sink must be >= 0");
    check(std::isfinite(epsilon), "expected_attention: epsilon must be finite");
  }
  std::string name() const override { return "expected_attention"; }
  nlohmann::json params() const override {
    return {{"n_future_positions", n_future_},
            {"n_sink", n_sink_},
            {"use_covariance", use_covariance_},
            {"use_vnorm", use_vnorm_},
            {"epsilon", epsilon_}};
  }

  std::string score_identity(const LayerView&) const override {
    return identity_from_params(*this);
  }

  Scores score(LayerView& view) override {
    const ModelConfig& c = *view.config;
    const int64_t T = view.n_tokens;  // hidden states: the context (or the chunk)
    const int64_t n_rows = uniform_length(view, name());
    check(T > n_sink_ && n_rows > n_sink_,
          "expected_attention: the context must be longer than n_sink");
    const int64_t Hq = c.n_heads, H = view.cache->n_segments(), G = Hq / H, D = c.head_dim,
                  h2 = D / 2;
    Backend& be = *view.backend;

    // 1. Statistics of the pre-RoPE queries of tokens n_sink..T-1 (population covariance).
    const int64_t N = T - n_sink_;
    const Tensor q = prerope_query_rows(view, n_sink_, T);
    const float* qp = q.ptr<float>();
    std::vector<double> mu(static_cast<size_t>(Hq * D), 0.0);
    {
      // Each mu[i] is still summed over t in order; restrict lets the loop over i vectorise.
      double* __restrict m = mu.data();
      for (int64_t t = 0; t < N; ++t) {
        const float* __restrict row = qp + t * Hq * D;
        for (int64_t i = 0; i < Hq * D; ++i) m[i] += static_cast<double>(row[i]);
      }
    }
    std::vector<float> muf(mu.size());
    for (size_t i = 0; i < mu.size(); ++i)
      muf[i] = static_cast<float>(mu[i] / static_cast<double>(N));
    std::vector<float> cov(static_cast<size_t>(use_covariance_ ? Hq * D * D : 0));
    if (use_covariance_) {
      // (Q - mu)^T of one head, rows padded to Np (zeros): a row stride that is not a
      // multiple of 4 KiB keeps the transposed writes out of each other's cache sets, and the
      // trailing zeros add exact zeros to each entry's sum.
      const int64_t Np = (N + 15) / 16 * 16 + 16;
      Tensor centered_t = Tensor::empty(DType::F32, {D, Np});
      Tensor prod = Tensor::empty(DType::F32, {D, D});
      float* ct = centered_t.ptr<float>();
      std::fill(ct, ct + D * Np, 0.f);
      for (int64_t hq = 0; hq < Hq; ++hq) {
        const float* mh = muf.data() + hq * D;
        for (int64_t t0 = 0; t0 < N; t0 += 16) {
          const int64_t t1 = std::min(N, t0 + 16);
          for (int64_t i = 0; i < D; ++i)
            for (int64_t t = t0; t < t1; ++t) ct[i * Np + t] = qp[(t * Hq + hq) * D + i] - mh[i];
        }
        be.matmul(centered_t, centered_t, prod);
        for (int64_t i = 0; i < D * D; ++i)
          cov[static_cast<size_t>(hq * D * D + i)] = prod.ptr<float>()[i] / static_cast<float>(N);
      }
    }

    // 2. The rotation averaged over positions T..T+n_future-1: R = mean_p (cos_p I + sin_p P),
    // P x = rotate_half(x) = [-x2, x1]. R[i][i] = R[i+h][i+h] = cbar_i, R[i][i+h] = -sbar_i,
    // R[i+h][i] = sbar_i. cos/sin in float32 as transformers' rotary embedding gives them.
    std::vector<float> inv(static_cast<size_t>(h2));
    rope_inv_freq(c.rope, inv.data());
    std::vector<double> R(static_cast<size_t>(D * D), 0.0);
    {
      std::vector<double> cbar(static_cast<size_t>(h2), 0.0), sbar(static_cast<size_t>(h2), 0.0);
      for (int64_t p = T; p < T + n_future_; ++p) {
        for (int64_t i = 0; i < h2; ++i) {
          const float angle = static_cast<float>(p) * inv[static_cast<size_t>(i)];
          cbar[static_cast<size_t>(i)] += std::cos(angle);
          sbar[static_cast<size_t>(i)] += std::sin(angle);
        }
      }
      for (int64_t i = 0; i < h2; ++i) {
        const double cb =
            static_cast<double>(static_cast<float>(cbar[static_cast<size_t>(i)] / n_future_));
        const double sb =
            static_cast<double>(static_cast<float>(sbar[static_cast<size_t>(i)] / n_future_));
        R[static_cast<size_t>(i * D + i)] = cb;
        R[static_cast<size_t>((i + h2) * D + i + h2)] = cb;
        R[static_cast<size_t>(i * D + i + h2)] = -sb;
        R[static_cast<size_t>((i + h2) * D + i)] = sb;
      }
    }
    // mu' = R mu; cov' = R cov R^T (the averaged R, as kvpress does). R has two non-zeros
    // per row and column (R[a][a] and R[a][a +- h2]), so each product is a pair of terms:
    // the same double sums as the dense products (their other terms are exact zeros).
    const auto partner = [h2](int64_t a) { return a < h2 ? a + h2 : a - h2; };
    std::vector<float> mu_r(static_cast<size_t>(Hq * D)), cov_r(cov.size());
    std::vector<double> tmp(static_cast<size_t>(D * D));
    const auto r_at = [&](int64_t a, int64_t b) { return R[static_cast<size_t>(a * D + b)]; };
    for (int64_t hq = 0; hq < Hq; ++hq) {
      const float* m = muf.data() + hq * D;
      for (int64_t a = 0; a < D; ++a) {
        const int64_t p = partner(a), lo = std::min(a, p), hi = std::max(a, p);
        double sum = 0;
        sum += r_at(a, lo) * m[lo];
        sum += r_at(a, hi) * m[hi];
        mu_r[static_cast<size_t>(hq * D + a)] = static_cast<float>(sum);
      }
      if (!use_covariance_) continue;
      const float* cv = cov.data() + hq * D * D;
      for (int64_t a = 0; a < D; ++a) {  // tmp = R cov
        const int64_t p = partner(a), lo = std::min(a, p), hi = std::max(a, p);
        for (int64_t b = 0; b < D; ++b) {
          double sum = 0;
          sum += r_at(a, lo) * cv[lo * D + b];
          sum += r_at(a, hi) * cv[hi * D + b];
          tmp[static_cast<size_t>(a * D + b)] = sum;
        }
      }
      for (int64_t a = 0; a < D; ++a)  // cov' = tmp R^T
        for (int64_t b = 0; b < D; ++b) {
          const int64_t p = partner(b), lo = std::min(b, p), hi = std::max(b, p);
          double sum = 0;
          sum += tmp[static_cast<size_t>(a * D + lo)] * r_at(b, lo);
          sum += tmp[static_cast<size_t>(a * D + hi)] * r_at(b, hi);
          cov_r[static_cast<size_t>(hq * D * D + a * D + b)] = static_cast<float>(sum);
        }
    }

    // 3. Per kv head: z_qj = k_j . mu'_q / sqrt(d) + k_j^T cov'_q k_j / d / 2 over the non-sink
    // rows, softmax over j, mean over the G query heads, times ||v_j||.
    const KVCache& cache = *view.cache;
    const int64_t M = n_rows - n_sink_;
    const int64_t per_q = use_covariance_ ? 1 + D : 1;
    Tensor w = Tensor::empty(DType::F32, {G * per_q, D});
    Tensor y = Tensor::empty(DType::F32, {M, G * per_q});
    Scores s{static_cast<int>(H), n_rows, std::vector<float>(static_cast<size_t>(H * n_rows), 0.f)};
    std::vector<float> z(static_cast<size_t>(M)), acc(static_cast<size_t>(M));
    const float sqrt_d = std::sqrt(static_cast<float>(D));
    float global_max = -INFINITY;
    for (int64_t h = 0; h < H; ++h) {
      float* wp = w.ptr<float>();
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = h * G + g;
        for (int64_t i = 0; i < D; ++i) wp[g * D + i] = mu_r[static_cast<size_t>(hq * D + i)];
        if (use_covariance_)
          for (int64_t i = 0; i < D * D; ++i)
            wp[G * D + g * D * D + i] = cov_r[static_cast<size_t>(hq * D * D + i)];
      }
      const Tensor keys =
          cache.rows_f32(view.layer, static_cast<int>(h), KVCache::Part::K, n_sink_, M);
      const float* kp = keys.ptr<float>();
      be.matmul(keys, w, y);
      const float* yp = y.ptr<float>();
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t g = 0; g < G; ++g) {
        float mx = -INFINITY;
        for (int64_t j = 0; j < M; ++j) {
          const float* row = yp + j * G * per_q;
          float v = row[g] / sqrt_d;
          if (use_covariance_) {
            float quad = 0;
            const float* ck = row + G + g * D;  // (cov' k_j)
            for (int64_t i = 0; i < D; ++i) quad += kp[j * D + i] * ck[i];
            v += quad / static_cast<float>(D) / 2.f;
          }
          z[static_cast<size_t>(j)] = v;
          mx = std::max(mx, v);
        }
        float sum = 0;
        for (int64_t j = 0; j < M; ++j) {
          z[static_cast<size_t>(j)] = std::exp(z[static_cast<size_t>(j)] - mx);
          sum += z[static_cast<size_t>(j)];
        }
        for (int64_t j = 0; j < M; ++j)
          acc[static_cast<size_t>(j)] += z[static_cast<size_t>(j)] / sum;
      }
      const Tensor values =
          cache.rows_f32(view.layer, static_cast<int>(h), KVCache::Part::V, n_sink_, M);
      const float* vp = values.ptr<float>();
      for (int64_t j = 0; j < M; ++j) {
        float v = acc[static_cast<size_t>(j)] / static_cast<float>(G);
        if (use_vnorm_) {
          float n2 = 0;
          for (int64_t i = 0; i < D; ++i) n2 += vp[j * D + i] * vp[j * D + i];
          v = (v + static_cast<float>(epsilon_)) * std::sqrt(n2);
        }
        s.at(static_cast<int>(h), n_sink_ + j) = v;
        global_max = std::max(global_max, v);
      }
    }
    // 4. The sinks: the global maximum + 1, so they are always kept.
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < n_sink_; ++j) s.at(static_cast<int>(h), j) = global_max + 1.f;
    return s;
  }

 private:
  int64_t n_future_, n_sink_;
  bool use_covariance_, use_vnorm_;
  double epsilon_;
};

const PressRegistration registration(
    {"expected_attention",
     "keep the keys that future queries (a Gaussian fitted to the context's queries, rotated "
     "to the next positions) are expected to attend to, weighted by the value norm",
     {{"n_future_positions", "int", "512", "future positions the rotation is averaged over"},
      {"n_sink", "int", "4", "first tokens always kept and left out of the statistics"},
      {"use_covariance", "bool", "true", "add the query covariance term"},
      {"use_vnorm", "bool", "true", "multiply by the value's L2 norm"},
      {"epsilon", "float", "0", "added to the attention before the value-norm rescaling"}},
     [](double ratio, PressArgs& a) {
       return std::make_unique<ExpectedAttentionPress>(
           ratio, a.get_int("n_future_positions", 512, 1, kMaxFuturePositions),
           a.get_int("n_sink", 4), a.get_bool("use_covariance", true),
           a.get_bool("use_vnorm", true), a.get_finite("epsilon", 0.0));
     }});

}  // namespace

}  // namespace kvp
