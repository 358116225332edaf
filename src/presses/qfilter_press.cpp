// qfilter: score = -(f . k_j) with one learned filter f per (layer, kv head), applied to the
// post-RoPE keys (docs/kvpress-semantics.md 3.10). kvpress downloads the filters from the
// Hugging Face Hub; here they come from a file: raw little-endian float32
// [n_layers, n_kv_heads, head_dim], in transformers' rotate_half head-dim layout (the layout
// of our cached keys).
#include <bit>
#include <cstring>

#include "core/error.h"
#include "io/read_file.h"
#include "presses/registry.h"
#include "presses/snapkv_press.h"

namespace kvp {

namespace {

std::vector<float> read_filters(const std::string& path) {
  check(!path.empty(),
        "qfilter: needs filters=PATH, a raw little-endian float32 file of "
        "[n_layers, n_kv_heads, head_dim] filters");
  // A real model's filters are n_layers * n_kv_heads * head_dim floats: 128 KiB for an 8B
  // Llama, so 16 MiB leaves room for any model while refusing a mistaken path at once.
  const std::string bytes = read_file_capped(path, "qfilter filters file",
                                             {.max_bytes = 16ull << 20, .regular_only = true});
  check(!bytes.empty() && bytes.size() % 4 == 0,
        "qfilter: filters file " + path + " has " + std::to_string(bytes.size()) +
            " bytes, not a non-empty whole number of float32 values");
  std::vector<float> f(bytes.size() / 4);
  for (size_t i = 0; i < f.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, bytes.data() + 4 * i, 4);
    if constexpr (std::endian::native == std::endian::big) u = __builtin_bswap32(u);
    std::memcpy(&f[i], &u, 4);
  }
  return f;
}

class QFilterPress : public ScorerPress {
 public:
  QFilterPress(double ratio, std::string path)
      : ScorerPress(ratio), path_(std::move(path)), filters_(read_filters(path_)) {}
  std::string name() const override { return "qfilter"; }
  nlohmann::json params() const override { return {{"filters", path_}}; }

  std::string score_identity(const LayerView&) const override {
    return identity_from_params(*this);
  }

  Scores score(LayerView& view) override {
    const int64_t n = uniform_length(view, "qfilter");
    const KVCache& cache = *view.cache;
    const int64_t L = view.config->n_layers, H = cache.n_segments(), D = cache.head_dim();
    check(static_cast<int64_t>(filters_.size()) == L * H * D,
          "qfilter: filters file " + path_ + " holds " + std::to_string(filters_.size()) +
              " float32 values; this model needs n_layers x n_kv_heads x head_dim = " +
              std::to_string(L) + " x " + std::to_string(H) + " x " + std::to_string(D) + " = " +
              std::to_string(L * H * D));
    Backend& be = *view.backend;
    const Tensor& filters = filters_on(be, D);
    Scores s = alloc_scores(be, static_cast<int>(H), n);
    for (int64_t h = 0; h < H; ++h) {
      // -(f . k_j): the keys times the head's filter, one [n, 1] matmul.
      const Tensor keys = cache.rows_f32(view.layer, static_cast<int>(h), KVCache::Part::K, 0, n);
      const int64_t f = view.layer * H + h;
      Tensor out = s.head(static_cast<int>(h)).reshaped({n, 1});
      be.matmul(keys, filters.row_slice(f, f + 1, {1, D}), out);
    }
    be.affine(s.values, -1.f, 0.f);
    return s;
  }

 private:
  // The filters in `backend`'s memory ([n_layers * n_kv_heads, head_dim]), uploaded once.
  const Tensor& filters_on(Backend& backend, int64_t head_dim) {
    if (filters_dev_.backend() != &backend) {
      const auto n = static_cast<int64_t>(filters_.size());
      filters_dev_ = backend.alloc(DType::F32, {n / head_dim, head_dim});
      backend.upload(filters_.data(), filters_dev_, 0, filters_dev_.nbytes());
    }
    return filters_dev_;
  }

  std::string path_;
  std::vector<float> filters_;
  Tensor filters_dev_;
};

const PressRegistration registration(
    {"qfilter",
     "keep the keys with the smallest projection on learned per-head filters (from a file)",
     {{"filters", "string", "",
       "path of raw little-endian float32 filters [n_layers, n_kv_heads, head_dim] (required)"}},
     [](double ratio, PressArgs& a) {
       return std::make_unique<QFilterPress>(ratio, a.get_string("filters", ""));
     }});

}  // namespace

}  // namespace kvp
