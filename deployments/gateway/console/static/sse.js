// Server-sent events from a fetch body, parsed incrementally: a read may end anywhere, even inside
// an event or a multi-byte character, so text is decoded in stream mode and buffered to "\n\n".

/** Payload of one event block: its `data:` lines joined; null when it has none (a comment). */
function payloadOf(block) {
  const lines = block.split('\n').filter((line) => line.startsWith('data:'));
  if (!lines.length) return null;
  return lines.map((line) => line.slice(5).replace(/^ /, '')).join('\n');
}

function toEvent(payload) {
  if (payload.trim() === '[DONE]') return { done: true };
  try {
    return { data: JSON.parse(payload) };
  } catch {
    return { invalid: payload };
  }
}

/**
 * Yields {data} for each JSON event, {done:true} for `[DONE]` (then stops), {invalid} for a payload
 * that is not JSON. Cancels the body if the consumer stops early.
 */
export async function* readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      // Normalise CRLF, but keep a trailing "\r": its "\n" may be in the next read.
      const tail = buffer.endsWith('\r') && !done ? '\r' : '';
      buffer = buffer.slice(0, buffer.length - tail.length).replace(/\r\n?/g, '\n') + tail;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const payload = payloadOf(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (payload === null) continue;
        const event = toEvent(payload);
        yield event;
        if (event.done) return;
      }
      if (done) {
        const payload = payloadOf(buffer);
        if (payload !== null) yield toEvent(payload);
        return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** The error an in-band event carries ({error:{...}} or vLLM's {object:"error", message}), else null. */
export function eventError(data) {
  if (!data || typeof data !== 'object') return null;
  if (data.error) return typeof data.error === 'object' ? data.error : { message: String(data.error) };
  if (data.object === 'error') return { message: data.message, code: data.code, type: data.type };
  return null;
}

/** The text this event adds to the answer. */
export function eventText(data) {
  const choice = Array.isArray(data?.choices) ? data.choices[0] : null;
  const text = choice?.delta?.content ?? choice?.text;
  return typeof text === 'string' ? text : '';
}
