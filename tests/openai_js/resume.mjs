// The official openai JavaScript SDK against durable-chat's /v1, as an application would
// use it: create a background response with a stream, drop the stream after DROP_AFTER
// events, re-attach with responses.retrieve(id, {stream: true, starting_after}), and
// check the error classes the SDK raises. Prints one JSON object for
// tests/test_openai_js.py to judge; exits 1 on an unexpected exception.
import OpenAI from "openai";

const env = process.env;
const client = new OpenAI({ baseURL: env.BASE_URL, apiKey: env.API_KEY, maxRetries: 0 });
const dropAfter = Number(env.DROP_AFTER ?? "6");

async function errorClass(call) {
  try {
    await call();
    return "no error";
  } catch (err) {
    return `${err.constructor.name} ${err.status ?? ""}`.trim();
  }
}

const first = [];
const created = await client.responses.create({
  model: env.MODEL,
  input: env.PROMPT,
  max_output_tokens: Number(env.MAX_TOKENS),
  background: true,
  stream: true,
});
for await (const event of created) {
  first.push({ seq: event.sequence_number, type: event.type, delta: event.delta ?? null,
               id: event.response?.id ?? null });
  if (first.length >= dropAfter) break; // leaving the loop aborts the request
}
const id = first[0].id;
const rest = [];
const resumed = await client.responses.retrieve(id, {
  stream: true,
  starting_after: first[first.length - 1].seq,
});
for await (const event of resumed) {
  rest.push({ seq: event.sequence_number, type: event.type, delta: event.delta ?? null });
}
const final = await client.responses.retrieve(id);
const badKey = new OpenAI({ baseURL: env.BASE_URL, apiKey: "not-a-valid-key-0123456789",
                            maxRetries: 0 });
console.log(JSON.stringify({
  id,
  first,
  rest,
  status: final.status,
  output_text: final.output_text,
  not_found: await errorClass(() => client.responses.retrieve("resp_" + "0".repeat(32))),
  bad_key: await errorClass(() => badKey.models.list()),
  tools: await errorClass(() => client.responses.create({
    model: env.MODEL, input: "hi", tools: [{ type: "web_search" }],
  })),
}));
