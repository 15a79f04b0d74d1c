/**
 * JSON as the old Python service wrote it (`json.dumps` defaults): `", "` between items, `": "`
 * after keys, and every non-ASCII character escaped. Runbook scripts that grep for
 * `"result": "ok"` keep working byte for byte.
 */
function escapeNonAscii(json: string): string {
  return json.replace(/[\u007f-\uffff]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function pythonJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const text = JSON.stringify(value);
    return typeof value === 'string' ? escapeNonAscii(text) : (text ?? 'null');
  }
  if (Array.isArray(value)) return `[${value.map((item) => pythonJson(item)).join(', ')}]`;
  const items = Object.entries(value as Record<string, unknown>)
    .filter(([, item]) => item !== undefined)
    .map(([key, item]) => `${pythonJson(key)}: ${pythonJson(item)}`);
  return `{${items.join(', ')}}`;
}
