#include "eval/ruler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <sstream>

#include "core/error.h"

namespace kvp {

namespace {

// The built-in haystack, as an array of bytes generated from default_haystack.txt.
const unsigned char kHaystackBytes[] = {
#include "default_haystack.inc"
};

// A small, portable generator (splitmix64): the same rows on every platform and library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n).
  uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
  int64_t range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo + 1)));
  }
  double unit() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(below(i))]);
  }

 private:
  uint64_t s_;
};

const std::vector<std::string> kAdjectives = {
    "amber",     "ancient", "bitter",  "bold",   "brave",  "brisk",  "calm",     "clever",
    "cosmic",    "crimson", "curious", "dusty",  "eager",  "early",  "electric", "faded",
    "fancy",     "fierce",  "frozen",  "gentle", "giant",  "golden", "grumpy",   "hidden",
    "hollow",    "humble",  "icy",     "jolly",  "lazy",   "little", "lively",   "lonely",
    "lucky",     "mellow",  "misty",   "modern", "noisy",  "odd",    "orange",   "pale",
    "patient",   "polite",  "proud",   "purple", "quiet",  "rapid",  "rusty",    "salty",
    "scarlet",   "shiny",   "silent",  "silver", "sleepy", "smooth", "sour",     "spicy",
    "steady",    "stormy",  "sunny",   "swift",  "tender", "tiny",   "velvet",   "vivid",
    "wandering", "warm",    "wild",    "windy",  "wise",   "wooden", "young",    "zealous"};

const std::vector<std::string> kNouns = {
    "anchor",   "apple",   "arrow",   "badger",   "banjo",  "barrel",  "beacon",   "bicycle",
    "blanket",  "bottle",  "bridge",  "bucket",   "cabin",  "camel",   "candle",   "canyon",
    "carpet",   "castle",  "cellar",  "chimney",  "cloud",  "comet",   "compass",  "cottage",
    "crystal",  "dolphin", "dragon",  "engine",   "falcon", "feather", "fiddle",   "forest",
    "fountain", "garden",  "glacier", "goblet",   "harbor", "harvest", "helmet",   "island",
    "jacket",   "kettle",  "ladder",  "lantern",  "lemon",  "library", "lizard",   "magnet",
    "marble",   "meadow",  "mirror",  "mountain", "needle", "oasis",   "orchard",  "otter",
    "paddle",   "parrot",  "pebble",  "pepper",   "piano",  "pillow",  "planet",   "pocket",
    "pumpkin",  "quilt",   "rabbit",  "raven",    "ribbon", "river",   "rocket",   "saddle",
    "sailor",   "scarf",   "shovel",  "spider",   "spoon",  "statue",  "teapot",   "thunder",
    "tiger",    "tractor", "trumpet", "tulip",    "tunnel", "turtle",  "umbrella", "valley",
    "violin",   "wagon",   "walnut",  "whistle",  "window", "wizard",  "yacht",    "zebra"};

const std::string kNoiseSentence =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

const std::vector<std::string> kTasks = {"niah_single_1",
                                         "niah_single_2",
                                         "niah_single_3",
                                         "niah_multikey_1",
                                         "niah_multikey_2",
                                         "niah_multikey_3",
                                         "niah_multivalue",
                                         "niah_multiquery",
                                         "vt",
                                         "cwe",
                                         "fwe"};

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

// "a, b, c and d"
std::string english_list(const std::vector<std::string>& items) {
  if (items.size() <= 1) return join(items, "");
  std::vector<std::string> head(items.begin(), items.end() - 1);
  return join(head, ", ") + " and " + items.back();
}

std::vector<std::string> split_sentences(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    cur += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
    const bool end =
        (c == '.' || c == '!' || c == '?') &&
        (i + 1 == text.size() || std::isspace(static_cast<unsigned char>(text[i + 1])));
    if (end) {
      size_t a = cur.find_first_not_of(' ');
      if (a != std::string::npos) out.push_back(cur.substr(a));
      cur.clear();
    }
  }
  size_t a = cur.find_first_not_of(' ');
  if (a != std::string::npos) out.push_back(cur.substr(a));
  // collapse runs of spaces
  for (auto& s : out) {
    std::string t;
    for (char c : s) {
      if (c == ' ' && !t.empty() && t.back() == ' ') continue;
      t += c;
    }
    while (!t.empty() && t.back() == ' ') t.pop_back();
    s = t;
  }
  return out;
}

struct Sample {
  std::string context, question, answer_prefix;
  std::vector<std::string> answers;
  int max_new_tokens = 0;
};

// Everything a task draws at random is drawn from `rng` in a fixed order, so the sample for a
// given size n only depends on (seed, n): the fitting search can rebuild it freely.
using Builder = std::function<Sample(Rng& rng, int64_t n)>;

std::string key_word(Rng& rng) {
  return kAdjectives[rng.below(kAdjectives.size())] + "-" + kNouns[rng.below(kNouns.size())];
}
std::string number_value(Rng& rng) {
  return std::to_string(rng.range(1000000, 9999999));
}
std::string uuid_value(Rng& rng) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) s += '-';
    char c = hex[rng.below(16)];
    if (i == 12) c = '4';
    if (i == 16) c = hex[8 + rng.below(4)];
    s += c;
  }
  return s;
}

// Distinct draws from a generator.
std::vector<std::string> distinct(Rng& rng, size_t n, const std::function<std::string(Rng&)>& draw,
                                  const std::vector<std::string>& avoid = {}) {
  std::vector<std::string> out;
  for (int guard = 0; out.size() < n && guard < 100000; ++guard) {
    std::string s = draw(rng);
    if (std::find(out.begin(), out.end(), s) == out.end() &&
        std::find(avoid.begin(), avoid.end(), s) == avoid.end())
      out.push_back(std::move(s));
  }
  check(out.size() == n, "ruler: could not draw enough distinct values");
  return out;
}

// Inserts sentences into a haystack at given depths in [0, 1).
std::string insert_at_depths(std::vector<std::string> haystack,
                             const std::vector<std::string>& needles,
                             const std::vector<double>& depths) {
  std::vector<std::pair<size_t, std::string>> at;
  for (size_t i = 0; i < needles.size(); ++i) {
    at.emplace_back(static_cast<size_t>(depths[i] * static_cast<double>(haystack.size() + 1)),
                    needles[i]);
  }
  std::stable_sort(at.begin(), at.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  size_t next = 0;
  for (size_t i = 0; i <= haystack.size(); ++i) {
    while (next < at.size() && at[next].first <= i) out.push_back(at[next++].second);
    if (i < haystack.size()) out.push_back(std::move(haystack[i]));
  }
  while (next < at.size()) out.push_back(at[next++].second);
  return join(out, " ");
}

enum class Hay { NOISE, ESSAY, NEEDLES };
enum class Kind { NUMBER, UUID };

struct NiahSpec {
  Hay hay;
  Kind key_kind;  // NUMBER means word keys
  Kind value_kind;
  int n_keys;     // needles with distinct keys (1 is the queried one unless queries > 1)
  int n_values;   // values for the queried key
  int n_queries;  // keys asked about
};

Builder niah_builder(NiahSpec spec, const std::vector<std::string>& essay) {
  return [spec, &essay](Rng& rng, int64_t n) {
    const std::string what = spec.value_kind == Kind::UUID ? "uuid" : "number";
    auto draw_key = [&](Rng& r) {
      return spec.key_kind == Kind::UUID ? uuid_value(r) : key_word(r);
    };
    auto draw_value = [&](Rng& r) {
      return spec.value_kind == Kind::UUID ? uuid_value(r) : number_value(r);
    };
    const std::vector<std::string> keys = distinct(rng, static_cast<size_t>(spec.n_keys), draw_key);
    std::vector<std::string> needles, queried, answers;
    for (int k = 0; k < spec.n_keys; ++k) {
      const bool asked = k < spec.n_queries;
      const int n_values = asked ? spec.n_values : 1;
      for (int v = 0; v < n_values; ++v) {
        const std::string value = draw_value(rng);
        needles.push_back("One special magic " + what + " for " + keys[k] + " is: " + value + ".");
        if (asked) answers.push_back(value);
      }
      if (asked) queried.push_back(keys[k]);
    }
    std::vector<double> depths;
    for (size_t i = 0; i < needles.size(); ++i) depths.push_back(rng.unit());
    // The haystack: n units of filler.
    std::vector<std::string> hay;
    if (spec.hay == Hay::NOISE) {
      for (int64_t i = 0; i < n; ++i) hay.push_back(kNoiseSentence);
    } else if (spec.hay == Hay::ESSAY) {
      const size_t start = static_cast<size_t>(rng.below(essay.size()));
      for (int64_t i = 0; i < n; ++i)
        hay.push_back(essay[(start + static_cast<size_t>(i)) % essay.size()]);
    } else {  // distractor needles with other keys
      Rng fill(rng.next());
      std::vector<std::string> taken = keys;
      for (int64_t i = 0; i < n; ++i) {
        std::string k = draw_key(fill);
        if (std::find(taken.begin(), taken.end(), k) != taken.end()) continue;
        if (spec.key_kind != Kind::UUID) taken.push_back(k);
        hay.push_back("One special magic " + what + " for " + k + " is: " + draw_value(fill) + ".");
      }
    }
    Sample s;
    const std::string plural = what + "s";
    s.context = "Some special magic " + plural +
                " are hidden in the text below. Memorize them; you will be asked about them "
                "afterwards.\n\n" +
                insert_at_depths(std::move(hay), needles, depths);
    if (spec.n_queries > 1) {
      s.question = "What are the special magic " + plural + " for " + english_list(queried) +
                   " mentioned in the text above?";
      s.answer_prefix = "The special magic " + plural + " for " + english_list(queried) +
                        " mentioned in the text above are";
    } else if (spec.n_values > 1) {
      s.question = "What are all the special magic " + plural + " for " + queried[0] +
                   " mentioned in the text above?";
      s.answer_prefix =
          "The special magic " + plural + " for " + queried[0] + " mentioned in the text above are";
    } else {
      s.question = "What is the special magic " + what + " for " + queried[0] +
                   " mentioned in the text above?";
      s.answer_prefix =
          "The special magic " + what + " for " + queried[0] + " mentioned in the text above is";
    }
    s.answers = answers;
    const int per_answer = spec.value_kind == Kind::UUID ? 28 : 10;
    s.max_new_tokens = 8 + per_answer * static_cast<int>(answers.size());
    return s;
  };
}

std::string var_name(Rng& rng) {
  std::string s;
  for (int i = 0; i < 5; ++i) s += static_cast<char>('A' + rng.below(26));
  return s;
}

Builder vt_builder() {
  return [](Rng& rng, int64_t n) {
    const int hops = 4;
    const std::vector<std::string> vars = distinct(rng, hops + 1, var_name);
    const std::string value = std::to_string(rng.range(10000, 99999));
    std::vector<std::string> chain = {"VAR " + vars[0] + " = " + value + "."};
    for (int i = 1; i <= hops; ++i)
      chain.push_back("VAR " + vars[static_cast<size_t>(i)] + " = VAR " +
                      vars[static_cast<size_t>(i - 1)] + ".");
    std::vector<double> depths;
    for (size_t i = 0; i < chain.size(); ++i) depths.push_back(rng.unit());
    std::sort(depths.begin(), depths.end());  // assignments appear in order
    std::vector<std::string> hay(static_cast<size_t>(n), kNoiseSentence);
    Sample s;
    s.context =
        "Memorize every variable assignment in the text below and follow the chains of "
        "assignments.\n\n" +
        insert_at_depths(std::move(hay), chain, depths);
    s.question = "Find all the variables that are assigned the value " + value +
                 " in the text above, directly or through other variables.";
    s.answer_prefix = "Answer: Following the chains of assignments in the text above, " +
                      std::to_string(hops + 1) + " variables are assigned the value " + value +
                      ". They are:";
    s.answers = vars;
    s.max_new_tokens = 32;
    return s;
  };
}

std::vector<std::string> word_pool() {
  std::vector<std::string> pool = kNouns;
  pool.insert(pool.end(), kAdjectives.begin(), kAdjectives.end());
  return pool;
}

Builder cwe_builder(int64_t context_length) {
  // RULER repeats the common words 30 times in long contexts; short contexts cannot hold
  // that, so the repeat count scales with the length (at least 3 above the rare words').
  const int64_t freq_common = std::clamp<int64_t>(context_length / 128, 6, 30);
  return [freq_common](Rng& rng, int64_t n) {
    const int n_common = 10, freq_rare = 3;
    std::vector<std::string> pool = word_pool();
    rng.shuffle(pool);
    const int64_t n_rare = std::min<int64_t>(n, static_cast<int64_t>(pool.size()) - n_common);
    std::vector<std::string> common(pool.begin(), pool.begin() + n_common);
    std::vector<std::string> words;
    for (const auto& w : common)
      for (int64_t i = 0; i < freq_common; ++i) words.push_back(w);
    for (int64_t r = 0; r < n_rare; ++r)
      for (int i = 0; i < freq_rare; ++i) words.push_back(pool[static_cast<size_t>(n_common + r)]);
    rng.shuffle(words);
    std::string list;
    for (size_t i = 0; i < words.size(); ++i)
      list += (i ? " " : "") + std::to_string(i + 1) + ". " + words[i];
    Sample s;
    s.context =
        "Below is a numbered list of words. Some of the words appear much more often than the "
        "others.\n\n" +
        list;
    s.question = "What are the 10 most common words in the list above?";
    s.answer_prefix = "Answer: The 10 words that appear most often in the list above are:";
    s.answers = common;
    s.max_new_tokens = 64;
    return s;
  };
}

std::string coded_word(Rng& rng) {
  std::string s;
  const int len = static_cast<int>(rng.range(4, 6));
  for (int i = 0; i < len; ++i) s += static_cast<char>('a' + rng.below(26));
  return s;
}

Builder fwe_builder() {
  return [](Rng& rng, int64_t n) {
    const double alpha = 2.0;
    const size_t vocab = 80;
    const std::vector<std::string> words = distinct(rng, vocab, coded_word);
    std::vector<double> cdf(vocab);
    double total = 0;
    for (size_t k = 0; k < vocab; ++k) {
      total += 1.0 / std::pow(static_cast<double>(k + 1), alpha);
      cdf[k] = total;
    }
    std::vector<std::string> text;
    std::map<std::string, int64_t> counts;
    for (int64_t i = 0; i < n; ++i) {
      const double u = rng.unit() * total;
      const size_t k = std::min<size_t>(
          static_cast<size_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin()),
          vocab - 1);
      text.push_back(words[k]);
      ++counts[words[k]];
    }
    std::vector<std::pair<int64_t, std::string>> ranked;
    for (const auto& [w, c] : counts) ranked.emplace_back(-c, w);
    std::sort(ranked.begin(), ranked.end());
    Sample s;
    std::string body;
    for (size_t i = 0; i < text.size(); ++i)
      body += (i ? (i % 10 == 0 ? " ... " : " ") : "") + text[i];
    s.context =
        "Read the coded text below and keep track of how often each coded word appears.\n\n" + body;
    s.question = "What are the three most frequently appearing coded words in the text above?";
    s.answer_prefix =
        "Answer: The three most frequently appearing coded words in the text above are:";
    for (size_t i = 0; i < std::min<size_t>(3, ranked.size()); ++i)
      s.answers.push_back(ranked[i].second);
    s.max_new_tokens = 24;
    return s;
  };
}

Builder builder_for(const std::string& task, const std::vector<std::string>& essay,
                    int64_t context_length) {
  if (task == "niah_single_1")
    return niah_builder({Hay::NOISE, Kind::NUMBER, Kind::NUMBER, 1, 1, 1}, essay);
  if (task == "niah_single_2")
    return niah_builder({Hay::ESSAY, Kind::NUMBER, Kind::NUMBER, 1, 1, 1}, essay);
  if (task == "niah_single_3")
    return niah_builder({Hay::ESSAY, Kind::NUMBER, Kind::UUID, 1, 1, 1}, essay);
  if (task == "niah_multikey_1")
    return niah_builder({Hay::ESSAY, Kind::NUMBER, Kind::NUMBER, 4, 1, 1}, essay);
  if (task == "niah_multikey_2")
    return niah_builder({Hay::NEEDLES, Kind::NUMBER, Kind::NUMBER, 1, 1, 1}, essay);
  if (task == "niah_multikey_3")
    return niah_builder({Hay::NEEDLES, Kind::UUID, Kind::UUID, 1, 1, 1}, essay);
  if (task == "niah_multivalue")
    return niah_builder({Hay::ESSAY, Kind::NUMBER, Kind::NUMBER, 1, 4, 1}, essay);
  if (task == "niah_multiquery")
    return niah_builder({Hay::ESSAY, Kind::NUMBER, Kind::NUMBER, 4, 1, 4}, essay);
  if (task == "vt") return vt_builder();
  if (task == "cwe") return cwe_builder(context_length);
  if (task == "fwe") return fwe_builder();
  check_ruler_task(task);
  return {};
}

// The largest n whose sample fits in `limit` tokens (context text and question together).
Sample fit(const Builder& build, uint64_t seed, int64_t limit, const TokenCounter& count,
           const std::string& task) {
  auto tokens = [&](int64_t n, Sample* out) {
    Rng rng(seed);
    Sample s = build(rng, n);
    const int64_t t = count(s.context);
    if (out) *out = std::move(s);
    return t;
  };
  check(tokens(0, nullptr) <= limit, "--context-length " + std::to_string(limit) +
                                         " is too short for the task '" + task +
                                         "' (its needles and instructions alone need " +
                                         std::to_string(tokens(0, nullptr)) + " tokens)");
  int64_t lo = 0, hi = 8;
  for (int64_t last = tokens(0, nullptr), now; (now = tokens(hi, nullptr)) <= limit; last = now) {
    if (now == last) {  // the task has no more filler to give (cwe's word pool): stop there
      Sample s;
      tokens(hi, &s);
      return s;
    }
    lo = hi;
    hi *= 2;
    check(hi < (int64_t{1} << 24), "ruler: cannot fill the context for task '" + task + "'");
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (tokens(mid, nullptr) <= limit ? lo : hi) = mid;
  }
  Sample s;
  tokens(lo, &s);
  return s;
}

}  // namespace

const std::vector<std::string>& ruler_tasks() {
  return kTasks;
}

void check_ruler_task(const std::string& name) {
  if (std::find(kTasks.begin(), kTasks.end(), name) != kTasks.end()) return;
  throw Error("unknown task '" + name + "' (tasks: " + join(kTasks, ", ") + ")");
}

const std::string& default_haystack() {
  static const std::string text(reinterpret_cast<const char*>(kHaystackBytes),
                                sizeof(kHaystackBytes));
  return text;
}

std::vector<EvalRow> generate_ruler(const RulerOptions& options, const TokenCounter& count_tokens) {
  check(options.context_length > 0, "--context-length must be positive");
  check(options.samples > 0, "--samples must be positive");
  const std::vector<std::string> tasks = options.tasks.empty() ? kTasks : options.tasks;
  for (const auto& t : tasks) check_ruler_task(t);
  const std::vector<std::string> essay =
      split_sentences(options.haystack.empty() ? default_haystack() : options.haystack);
  check(essay.size() >= 2, "the haystack text has fewer than two sentences");
  std::vector<EvalRow> rows;
  for (const auto& task : tasks) {
    const size_t task_index =
        static_cast<size_t>(std::find(kTasks.begin(), kTasks.end(), task) - kTasks.begin());
    const Builder build = builder_for(task, essay, options.context_length);
    for (int i = 0; i < options.samples; ++i) {
      Rng seeder(options.seed * 1000003ull + task_index * 7919ull + static_cast<uint64_t>(i));
      const Sample s = fit(build, seeder.next(), options.context_length, count_tokens, task);
      EvalRow r;
      r.task = task;
      r.context = s.context;
      r.question = s.question;
      r.answer_prefix = s.answer_prefix;
      r.answers = s.answers;
      r.max_new_tokens = s.max_new_tokens;
      r.metric = "all";
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

}  // namespace kvp
