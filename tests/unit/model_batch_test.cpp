// Model::forward_batch and greedy_answers_batched on a tiny random-weight model (no
// download needed, so this also runs under the sanitizers): several sequences, each on its
// own cache, give the logits and answers they give one by one.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/backend.h"
#include "backend/factory.h"
#include "core/error.h"
#include "model/model.h"
#include "pipeline/pipeline.h"
#include "support/test_paths.h"

namespace kvp {

namespace {

struct Sequence {
  std::vector<int32_t> ids, positions;
};

Sequence make_sequence(int64_t n, int32_t first_id, int32_t first_position, int32_t vocab) {
  Sequence s;
  for (int64_t t = 0; t < n; ++t) {
    s.ids.push_back(static_cast<int32_t>((first_id + 7 * t) % vocab));
    s.positions.push_back(static_cast<int32_t>(first_position + t));
  }
  return s;
}

}  // namespace

// Bound: 1e-4 absolute on logits of magnitude ~1 (the batched matmuls sum in another order).
TEST(ModelBatch, GroupsGetTheirOwnLogitsAndCaches) {
  auto backend = make_backend("cpu", 2);
  auto model = load_model(test::source_path("tests/models/tiny-llama"), *backend);
  const int32_t vocab = static_cast<int32_t>(model->config().vocab_size);
  // Three caches with different contexts (different lengths), then different new tokens.
  const std::vector<Sequence> contexts = {make_sequence(9, 1, 0, vocab),
                                          make_sequence(23, 5, 0, vocab),
                                          make_sequence(4, 11, 0, vocab)};
  const std::vector<Sequence> news = {make_sequence(5, 3, 9, vocab), make_sequence(1, 8, 23, vocab),
                                      make_sequence(12, 2, 4, vocab)};
  std::vector<KVCache> batched, alone;
  for (const auto& c : contexts) {
    batched.push_back(model->make_cache(64));
    alone.push_back(model->make_cache(64));
    model->forward(c.ids.data(), c.positions.data(), static_cast<int64_t>(c.ids.size()),
                   batched.back());
    model->forward(c.ids.data(), c.positions.data(), static_cast<int64_t>(c.ids.size()),
                   alone.back());
  }
  std::vector<ForwardGroup> groups;
  for (size_t i = 0; i < news.size(); ++i) {
    groups.push_back({news[i].ids.data(), news[i].positions.data(),
                      static_cast<int64_t>(news[i].ids.size()), &batched[i]});
  }
  const Tensor& logits = model->forward_batch(groups);
  ASSERT_EQ(logits.rows(), 3);
  ASSERT_EQ(logits.cols(), vocab);
  const std::vector<float> got(logits.ptr<float>(), logits.ptr<float>() + logits.numel());
  for (size_t i = 0; i < news.size(); ++i) {
    const Tensor& one = model->forward(news[i].ids.data(), news[i].positions.data(),
                                       static_cast<int64_t>(news[i].ids.size()), alone[i]);
    for (int64_t v = 0; v < vocab; ++v)
      ASSERT_NEAR(got[i * static_cast<size_t>(vocab) + static_cast<size_t>(v)], one.ptr<float>()[v],
                  1e-4f)
          << "group " << i << " token " << v;
    EXPECT_EQ(batched[i].lengths(), alone[i].lengths()) << "group " << i;
  }
}

TEST(ModelBatch, BatchedGreedyAnswersEqualOneByOne) {
  auto backend = make_backend("cpu", 2);
  auto model = load_model(test::source_path("tests/models/tiny-llama"), *backend);
  const int32_t vocab = static_cast<int32_t>(model->config().vocab_size);
  std::vector<KVCache> batched, alone;
  std::vector<int64_t> first_positions;
  for (int64_t n : {6, 17, 30, 3, 12}) {
    const Sequence c = make_sequence(n, static_cast<int32_t>(n), 0, vocab);
    for (auto* caches : {&batched, &alone}) {
      caches->push_back(model->make_cache(n + 40));
      model->forward(c.ids.data(), c.positions.data(), n, caches->back());
    }
    first_positions.push_back(n);
  }
  const std::vector<int32_t> question = {4, 9, 2, 7};
  // Token 3 stops an answer early, so the batch shrinks while others go on.
  const auto is_stop = [](int32_t id) { return id == 3; };
  std::vector<KVCache*> pointers;
  for (auto& c : batched) pointers.push_back(&c);
  const auto answers =
      greedy_answers_batched(*model, pointers, question, first_positions, 20, is_stop);
  ASSERT_EQ(answers.size(), alone.size());
  for (size_t i = 0; i < alone.size(); ++i) {
    const auto one = greedy_answer(*model, alone[i], question, first_positions[i], 20, is_stop);
    EXPECT_EQ(answers[i], one) << "cache " << i;
    EXPECT_EQ(batched[i].lengths(), alone[i].lengths()) << "cache " << i;
  }
}

// Requests that join while others decode (as the eval grid adds a new context's cells) get
// the tokens they get alone; tickets number the requests in order, and a request with no
// tokens to decode finishes at once without touching its cache.
TEST(ModelBatch, RequestsJoiningMidwayAnswerAsAlone) {
  auto backend = make_backend("cpu", 2);
  auto model = load_model(test::source_path("tests/models/tiny-llama"), *backend);
  const int32_t vocab = static_cast<int32_t>(model->config().vocab_size);
  const std::vector<int64_t> lengths = {6, 17, 30, 3, 12};
  const std::vector<int> limits = {20, 5, 12, 0, 9};
  std::vector<KVCache> batched, alone;
  for (int64_t n : lengths) {
    const Sequence c = make_sequence(n, static_cast<int32_t>(n), 0, vocab);
    for (auto* caches : {&batched, &alone}) {
      caches->push_back(model->make_cache(n + 40));
      model->forward(c.ids.data(), c.positions.data(), n, caches->back());
    }
  }
  const std::vector<std::vector<int32_t>> questions = {
      {4, 9, 2, 7}, {5}, {1, 2, 3, 4, 5, 6}, {8, 8}, {2, 6}};
  const auto is_stop = [](int32_t id) { return id == 3; };
  DecodeBatcher batcher(*model, is_stop);
  std::vector<std::vector<int32_t>> got(lengths.size());
  std::vector<bool> finished(lengths.size(), false);
  size_t added = 0;
  const auto add = [&] {
    const AnswerRequest r{&batched[added], &questions[added], lengths[added], limits[added], {}};
    EXPECT_EQ(batcher.add(r), added);
    ++added;
  };
  add();
  add();
  // One more request joins after each of the first steps.
  for (int step = 0; batcher.busy() || added < lengths.size(); ++step) {
    if (step > 0 && added < lengths.size()) add();
    for (DecodeBatcher::Finished& f : batcher.step()) {
      ASSERT_LT(f.ticket, got.size());
      EXPECT_FALSE(finished[f.ticket]) << "request " << f.ticket << " finished twice";
      finished[f.ticket] = true;
      got[f.ticket] = std::move(f.tokens);
    }
    ASSERT_LT(step, 100) << "the batcher never went idle";
  }
  for (size_t i = 0; i < lengths.size(); ++i) {
    EXPECT_TRUE(finished[i]) << "request " << i;
    const auto one = greedy_answer(*model, alone[i], questions[i], lengths[i], limits[i], is_stop);
    EXPECT_EQ(got[i], one) << "request " << i;
    EXPECT_EQ(batched[i].lengths(), alone[i].lengths()) << "request " << i;
  }
  EXPECT_TRUE(got[3].empty());
  EXPECT_EQ(batched[3].length(0, 0), lengths[3]);
}

// Sampled and greedy requests in one batch: the batch then takes the logits to the host, and
// each request still gets what it gets alone (the greedy one the device argmax's tokens, the
// sampled ones their own seed's draws, whatever else is in the batch).
TEST(ModelBatch, SampledAndGreedyRequestsAnswerAsAlone) {
  auto backend = make_backend("cpu", 2);
  auto model = load_model(test::source_path("tests/models/tiny-llama"), *backend);
  const int32_t vocab = static_cast<int32_t>(model->config().vocab_size);
  const std::vector<SamplingParams> sampling = {
      {}, {1.3, 1, 0, 5}, {0.8, 0.9, 20, 6}, {1.3, 1, 0, 7}};
  const std::vector<int32_t> question = {4, 9, 2};
  const int64_t n = 11;
  const Sequence c = make_sequence(n, 3, 0, vocab);
  std::vector<KVCache> batched, alone;
  for (size_t i = 0; i < sampling.size(); ++i) {
    for (auto* caches : {&batched, &alone}) {
      caches->push_back(model->make_cache(n + 40));
      model->forward(c.ids.data(), c.positions.data(), n, caches->back());
    }
  }
  const auto is_stop = [](int32_t) { return false; };
  std::vector<AnswerRequest> requests;
  for (size_t i = 0; i < sampling.size(); ++i)
    requests.push_back({&batched[i], &question, n, 24, sampling[i]});
  const auto got = greedy_answers_batched(*model, requests, is_stop);
  for (size_t i = 0; i < sampling.size(); ++i) {
    const auto one = greedy_answers_batched(
        *model, {AnswerRequest{&alone[i], &question, n, 24, sampling[i]}}, is_stop)[0];
    EXPECT_EQ(got[i], one) << "request " << i;
  }
  KVCache fresh = model->make_cache(n + 40);  // alone[0] now holds its answer's rows
  model->forward(c.ids.data(), c.positions.data(), n, fresh);
  EXPECT_EQ(got[0], greedy_answer(*model, fresh, question, n, 24, is_stop));
  EXPECT_NE(got[1], got[3]) << "seeds 5 and 7 drew the same 24 tokens";
}

TEST(ModelBatch, BatcherRejectsBadRequests) {
  auto backend = make_backend("cpu", 1);
  auto model = load_model(test::source_path("tests/models/tiny-llama"), *backend);
  KVCache cache = model->make_cache(8);
  const std::vector<int32_t> empty, question = {1};
  DecodeBatcher batcher(*model, [](int32_t) { return false; });
  EXPECT_THROW(batcher.add({nullptr, &question, 0, 4, {}}), Error);
  EXPECT_THROW(batcher.add({&cache, nullptr, 0, 4, {}}), Error);
  EXPECT_THROW(batcher.add({&cache, &empty, 0, 4, {}}), Error);
  EXPECT_FALSE(batcher.busy());
  EXPECT_TRUE(batcher.step().empty());
}

TEST(ModelBatch, RejectsBadGroups) {
  auto backend = make_backend("cpu", 1);
  auto model = load_model(test::source_path("tests/models/tiny-llama"), *backend);
  KVCache cache = model->make_cache(8);
  const int32_t id = 1, pos = 0, bad = static_cast<int32_t>(model->config().vocab_size);
  EXPECT_THROW(model->forward_batch({}), Error);
  EXPECT_THROW(model->forward_batch({{&id, &pos, 0, &cache}}), Error);
  EXPECT_THROW(model->forward_batch({{&id, &pos, 1, nullptr}}), Error);
  EXPECT_THROW(model->forward_batch({{&id, &pos, 1, &cache}, {&bad, &pos, 1, &cache}}), Error);
}

}  // namespace kvp
