// expected_attention: score each key by the attention it should receive from future queries,
// modelled as a Gaussian fitted to the context's pre-RoPE queries and rotated by the average
// RoPE rotation of the next n_future_positions positions (kvpress's ExpectedAttentionPress).
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
    const int64_t T = view.n_tokens;  // hidden states: the context (or the chunk)
    const int64_t n_rows = uniform_length(view, name());
    check(T > n_sink_ && n_rows > n_sink_,
          "expected_attention: the context must be longer than n_sink");
    QueryStats stats = query_statistics(view);
    rotate_statistics(view, stats);
    Scores s = alloc_scores(*view.backend, view.cache->n_segments(), n_rows);
    for (int h = 0; h < s.n_heads; ++h) score_head(view, stats, h, s);
    // The sinks: the maximum of every other score + 1, so they are always kept.
    view.backend->set_cols_to_max(s.values, 0, n_sink_, 1.f);
    return s;
  }

 private:
  // The Gaussian of the future queries: per query head, the mean [Hq, D] and (with
  // use_covariance) the covariance [Hq * D, D], in the backend's memory.
  struct QueryStats {
    Tensor mean, cov;
  };

  // 1. Mean and population covariance of the pre-RoPE queries of tokens n_sink..T-1.
  QueryStats query_statistics(const LayerView& view) const {
    Backend& be = *view.backend;
    const int64_t Hq = view.config->n_heads, D = view.config->head_dim;
    const int64_t N = view.n_tokens - n_sink_;
    const Tensor q = prerope_query_rows(view, n_sink_, view.n_tokens).reshaped({N, Hq * D});
    QueryStats st{be.alloc(DType::F32, {Hq, D}), {}};
    be.reduce(q, 0, Reduce::Mean, st.mean);
    if (!use_covariance_) return st;
    // cov_h = (Q_h - mu_h)^T (Q_h - mu_h) / N: centre, transpose (head h's columns become
    // rows [h * D, (h + 1) * D)), then one [D, N] x [D, N]^T matmul per head.
    Tensor centered = be.alloc(DType::F32, {N, Hq * D});
    be.copy(q, 0, centered, 0, q.nbytes());
    Tensor minus_mean = be.alloc(DType::F32, {Hq * D});
    be.copy(st.mean, 0, minus_mean, 0, minus_mean.nbytes());
    be.affine(minus_mean, -1.f, 0.f);
    be.add_bias(centered, minus_mean);
    Tensor by_dim = be.alloc(DType::F32, {Hq * D, N});
    be.transpose(centered, by_dim);
    st.cov = be.alloc(DType::F32, {Hq * D, D});
    for (int64_t hq = 0; hq < Hq; ++hq) {
      const Tensor c = by_dim.row_slice(hq * D, (hq + 1) * D, {D, N});
      Tensor cov = st.cov.row_slice(hq * D, (hq + 1) * D, {D, D});
      be.matmul(c, c, cov);
    }
    be.affine(st.cov, 1.f / static_cast<float>(N), 0.f);
    return st;
  }

  // The RoPE rotation averaged over positions T..T+n_future-1: R = mean_p (cos_p I + sin_p P),
  // P x = rotate_half(x) = [-x2, x1]. R[i][i] = R[i+h][i+h] = cbar_i, R[i][i+h] = -sbar_i,
  // R[i+h][i] = sbar_i; cos and sin in float32 as transformers' rotary embedding gives them.
  // Made on the host from the positions alone ([D, D]), then uploaded.
  Tensor average_rotation(const LayerView& view) const {
    const int64_t D = view.config->head_dim, h2 = D / 2, T = view.n_tokens;
    std::vector<float> inv(static_cast<size_t>(h2));
    rope_inv_freq(view.config->rope, inv.data());
    std::vector<double> cbar(static_cast<size_t>(h2), 0.0), sbar(static_cast<size_t>(h2), 0.0);
    for (int64_t p = T; p < T + n_future_; ++p)
      for (int64_t i = 0; i < h2; ++i) {
        const float angle = static_cast<float>(p) * inv[static_cast<size_t>(i)];
        cbar[static_cast<size_t>(i)] += std::cos(angle);
        sbar[static_cast<size_t>(i)] += std::sin(angle);
      }
    std::vector<float> R(static_cast<size_t>(D * D), 0.f);
    const auto at = [&](int64_t a, int64_t b) -> float& {
      return R[static_cast<size_t>(a * D + b)];
    };
    for (int64_t i = 0; i < h2; ++i) {
      const auto cb = static_cast<float>(cbar[static_cast<size_t>(i)] / n_future_);
      const auto sb = static_cast<float>(sbar[static_cast<size_t>(i)] / n_future_);
      at(i, i) = at(i + h2, i + h2) = cb;
      at(i, i + h2) = -sb;
      at(i + h2, i) = sb;
    }
    return upload_f32(*view.backend, R).reshaped({D, D});
  }

  // 2. mu' = R mu and cov' = R cov R^T (the averaged R, as kvpress does), per query head.
  void rotate_statistics(const LayerView& view, QueryStats& st) const {
    Backend& be = *view.backend;
    const int64_t Hq = view.config->n_heads, D = view.config->head_dim;
    const Tensor R = average_rotation(view);
    Tensor mean = be.alloc(DType::F32, {Hq, D});
    be.matmul(st.mean, R, mean);  // rows mu_h R^T = (R mu_h)^T
    st.mean = mean;
    if (!use_covariance_) return;
    Tensor rc = be.alloc(DType::F32, {D, D});
    Tensor cov = be.alloc(DType::F32, {Hq * D, D});
    for (int64_t hq = 0; hq < Hq; ++hq) {
      const Tensor c = st.cov.row_slice(hq * D, (hq + 1) * D, {D, D});
      Tensor out = cov.row_slice(hq * D, (hq + 1) * D, {D, D});
      be.matmul(R, c, rc);    // R cov^T = R cov (symmetric)
      be.matmul(rc, R, out);  // (R cov) R^T
    }
    st.cov = cov;
  }

  // 3. Kv head h: z_qj = k_j . mu'_q / sqrt(d) + k_j^T cov'_q k_j / d / 2 over the non-sink
  // rows, softmax over j, mean over the G query heads, times (with use_vnorm) ||v_j||.
  void score_head(const LayerView& view, const QueryStats& st, int h, Scores& s) const {
    Backend& be = *view.backend;
    const int64_t Hq = view.config->n_heads, D = view.config->head_dim;
    const int64_t G = Hq / s.n_heads, M = s.n_rows - n_sink_;
    const Tensor keys = view.cache->rows_f32(view.layer, h, KVCache::Part::K, n_sink_, M);
    Tensor z = be.alloc(DType::F32, {G, M});
    Tensor quad = be.alloc(DType::F32, {M});
    Tensor ck = use_covariance_ ? be.alloc(DType::F32, {M, D}) : Tensor{};
    for (int64_t g = 0; g < G; ++g) {
      const int64_t hq = h * G + g;
      Tensor zg = z.row_slice(g, g + 1, {M, 1});
      be.matmul(keys, st.mean.row_slice(hq, hq + 1, {1, D}), zg);
      be.affine(zg, 1.f / std::sqrt(static_cast<float>(D)), 0.f);
      if (!use_covariance_) continue;
      be.matmul(keys, st.cov.row_slice(hq * D, (hq + 1) * D, {D, D}), ck);  // cov' k_j
      be.mul(ck, keys);
      be.reduce(ck, 1, Reduce::Sum, quad);
      be.affine(quad, 0.5f / static_cast<float>(D), 0.f);
      be.add(zg, quad.reshaped({M, 1}));
    }
    be.softmax_rows(z);
    Tensor out = s.values.reshaped({s.n_heads * s.n_rows, 1})
                     .row_slice(h * s.n_rows + n_sink_, (h + 1) * s.n_rows, {1, M});
    be.reduce(z, 0, Reduce::Mean, out);
    if (!use_vnorm_) return;
    Tensor vnorm = be.alloc(DType::F32, {1, M});
    be.row_norms(view.cache->rows(view.layer, h, KVCache::Part::V, n_sink_, M), Norm::L2, vnorm);
    be.affine(out, 1.f, static_cast<float>(epsilon_));
    be.mul(out, vnorm);
  }

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
