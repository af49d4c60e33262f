// Tutorial: connect your own model to cospec. Read top to bottom (docs/adapters.md walks
// through it): a toy inference engine, the adapter that wraps it in four calls, then a
// decode with two such models that checks speculation changed the cost, not the text.
#include <cospec/cospec.hpp>  // decoder, combiners, speculators, the model_adapter concept

#include <algorithm>  // std::copy_n
#include <cstddef>    // std::size_t
#include <cstdio>     // std::printf
#include <random>     // std::mt19937, std::uniform_real_distribution
#include <span>       // std::span
#include <stdexcept>  // std::runtime_error
#include <vector>     // std::vector

// ---- Step 1: the engine you already have -------------------------------------------------
// A stand-in for llama.cpp or a PyTorch model, with the same shape of API: decode a batch of
// tokens into a cache, flag the positions whose logits you want, read those logits back,
// remove cache entries past a position. Its "model" is a trigram table (the logits of the next
// token depend on the last two tokens); its "KV cache" is the list of tokens decoded so far.
// It reads the older of the two tokens from that cache, as attention reads cached keys and
// values, so a cache that is not rolled back gives wrong logits, just as in a real engine.
namespace toy_engine {

struct batch {
  std::vector<int> tokens;
  std::vector<bool> logits;  // as llama_batch::logits: compute the logits of this entry?
};

class trigram_engine {
 public:
  // Every engine shares one part of its table (so two of them agree on some tokens) and adds
  // `own_part` of a private one drawn from `seed`.
  trigram_engine(std::size_t vocabulary, float own_part, unsigned seed) : vocabulary_(vocabulary) {
    std::mt19937 shared_random(7), own_random(seed);
    std::uniform_real_distribution<float> shared_part(-3.0f, 3.0f), private_part(-3.0f, 3.0f);
    table_.resize(vocabulary * vocabulary * vocabulary);
    for (float& logit : table_) logit = shared_part(shared_random) + own_part * private_part(own_random);
  }

  std::size_t n_vocab() const { return vocabulary_; }
  std::size_t n_cached() const { return cache_.size(); }

  // One forward pass: appends the batch to the cache and computes the flagged positions'
  // logits, stored one row after another in batch order. Returns 0 on success.
  int decode(const batch& input) {
    outputs_.clear();
    for (std::size_t i = 0; i < input.tokens.size(); ++i) {
      const std::size_t before = cache_.empty() ? 0 : static_cast<std::size_t>(cache_.back());  // from the cache
      cache_.push_back(input.tokens[i]);
      if (input.logits[i]) {
        const std::size_t last = static_cast<std::size_t>(input.tokens[i]);
        const float* row = table_.data() + (before * vocabulary_ + last) * vocabulary_;
        outputs_.insert(outputs_.end(), row, row + vocabulary_);
      }
    }
    return 0;
  }

  const float* get_logits() const { return outputs_.data(); }  // the rows of the last decode
  void cache_remove(std::size_t from) { cache_.resize(from); }  // forget positions >= from

 private:
  std::size_t vocabulary_;
  std::vector<float> table_;    // table_[(before * V + last) * V + next]: the logit of `next`
  std::vector<int> cache_;      // the "KV cache"
  std::vector<float> outputs_;  // logits of the flagged positions of the last decode
};

}  // namespace toy_engine

// ---- Step 2: the adapter -----------------------------------------------------------------
// cospec drives a model only through these four calls (the cospec::model_adapter concept).
// Each comment says what the call is in a real engine (the table in docs/adapters.md).
class trigram_adapter {
 public:
  explicit trigram_adapter(toy_engine::trigram_engine& engine) : engine_(engine) {}

  // 1. The length V of every logit row.
  //    llama.cpp: llama_vocab_n_tokens(vocab). HF: config.vocab_size.
  std::size_t vocabulary_size() const { return engine_.n_vocab(); }

  // 2. How many tokens the context (the KV cache) holds now. cospec trusts this number, also
  //    after a failure, so report the engine's own count rather than keeping a second one.
  //    llama.cpp: your counter of positions in sequence 0. HF: the past_key_values length.
  std::size_t context_length() const { return engine_.n_cached(); }

  // 3. Append `tokens` in ONE forward pass and write the logits predicting the token after
  //    each of the last m = rows.size() of them into `rows`, oldest first. cospec asks only
  //    for what it needs (one row after a prompt; when verifying, one per proposal and one
  //    after them), so flag only those positions. llama.cpp: batch.logits[i] = true for the
  //    last m entries, llama_decode, llama_get_logits_ith. HF: model(input_ids,
  //    past_key_values=past, use_cache=True), copy logits[0, -m:, :].
  void feed(std::span<const cospec::token_id> tokens, cospec::logit_outputs rows) {
    batch_.tokens.assign(tokens.begin(), tokens.end());
    batch_.logits.assign(tokens.size(), false);
    for (std::size_t i = tokens.size() - rows.size(); i < tokens.size(); ++i) batch_.logits[i] = true;
    // Map the engine's status codes to exceptions here: cospec wraps them in
    // cospec::backend_failure and rolls every model back to the committed text.
    if (engine_.decode(batch_) != 0) throw std::runtime_error("trigram_engine::decode failed");
    const std::size_t v = vocabulary_size();
    for (std::size_t i = 0; i < rows.size(); ++i) std::copy_n(engine_.get_logits() + i * v, v, rows[i].begin());
  }

  // 4. Keep only the first `length` tokens: how rejected proposals are undone.
  //    llama.cpp: llama_memory_seq_rm(llama_get_memory(ctx), 0, length, -1).
  //    HF: DynamicCache.crop(length).
  void truncate(std::size_t length) { engine_.cache_remove(length); }

 private:
  toy_engine::trigram_engine& engine_;
  toy_engine::batch batch_;  // reused: once warmed up, a call allocates nothing
};

// The compiler checks the four calls; a missing or misspelled one fails here, not deep inside
// the decoder.
static_assert(cospec::model_adapter<trigram_adapter>);

// ---- Step 3: decode ------------------------------------------------------------------------
// Contrastive decoding: the target is softmax(l_expert - 0.1 * l_amateur). Standard decoding
// runs both models at every token; alternating speculation lets the cheap amateur propose 4
// tokens at a time and the expert verify them in one pass. Greedy output must be identical.
int main() {
  constexpr std::size_t vocabulary = 32;
  const std::vector<cospec::token_id> prompt{3, 1, 4, 1, 5};
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  cospec::generation_limits limits;
  limits.max_new_tokens = 48;

  // Fresh engines for every run: a model belongs to one decoder, which remembers what it fed.
  auto decode = [&](auto speculator) {
    toy_engine::trigram_engine expert_engine(vocabulary, 0.2f, 1), amateur_engine(vocabulary, 0.4f, 2);
    trigram_adapter expert(expert_engine), amateur(amateur_engine);
    std::vector<trigram_adapter*> models{&expert, &amateur};  // contrastive: 0 expert, 1 amateur
    cospec::decoder decoder(models, cospec::contrastive_decoding(0.1f), speculator, greedy);
    return decoder.generate(prompt, limits);
  };
  const cospec::generation_result reference = decode(cospec::standard{});
  // gammas {1, 4}: the expert adds only its bonus token, the amateur proposes 4 (longer
  // proposals mark the cheaper model, so the amateur runs first).
  const cospec::generation_result speculative = decode(cospec::alternating({1, 4}));

  std::printf("standard:    ");
  for (cospec::token_id token : reference.tokens) std::printf("%d ", token);
  std::printf("\nspeculative: ");
  for (cospec::token_id token : speculative.tokens) std::printf("%d ", token);
  std::printf("\nexpert passes: standard %zu, speculative %zu; amateur acceptance %.2f\n",
              reference.statistics.models[0].forward_passes, speculative.statistics.models[0].forward_passes,
              speculative.statistics.proposers[1].acceptance_rate());
  if (speculative.tokens != reference.tokens) {
    std::printf("MISMATCH: feed must write the rows of the LAST positions; truncate must drop the rest\n");
    return 1;
  }
  std::printf("identical output\n");
  return 0;
}
