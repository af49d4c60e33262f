// The official `openai` npm client, which nobody here wrote, against cospec-server: a streamed
// chat completion whose pieces add up to the non-streamed one, and a completion with logprobs.
// Exits non-zero on any mismatch. Usage: node openai_client.cjs http://127.0.0.1:PORT/v1
const OpenAI = require('openai');
const assert = require('assert');

async function main() {
  const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'not-needed' });
  const models = await client.models.list();
  const model = models.data[0].id;
  const messages = [{ role: 'user', content: 'Tell me a story.' }];

  const stream = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, stream: true });
  let streamed = '';
  let finish = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    const choice = chunk.choices[0];
    if (!choice) continue;
    streamed += choice.delta.content ?? '';
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  assert.ok(chunks >= 3, `only ${chunks} chunks`);
  assert.ok(finish === 'length' || finish === 'stop', `finish_reason ${finish}`);

  const whole = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0 });
  assert.strictEqual(whole.choices[0].message.content, streamed);
  assert.strictEqual(whole.choices[0].message.role, 'assistant');
  assert.ok(whole.usage.total_tokens > 0);

  const completion = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 6, temperature: 0, logprobs: 2 });
  const logprobs = completion.choices[0].logprobs;
  assert.strictEqual(logprobs.token_logprobs.length, completion.usage.completion_tokens);
  for (const [i, lp] of logprobs.token_logprobs.entries()) {
    assert.ok(lp <= 0, `logprob ${lp}`);
    assert.strictEqual(Object.keys(logprobs.top_logprobs[i]).length <= 2, true);
  }
  console.log(`ok: ${chunks} chunks, "${streamed}"`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
