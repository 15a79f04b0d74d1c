/** Checks real answers of a daemon against the OpenAPI document that daemon serves. */
import { expect } from '@jest/globals';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { Daemon } from './daemon.js';

export interface OpenApiDocument {
  openapi: string;
  components: { schemas: Record<string, unknown> };
  paths: Record<
    string,
    Record<string, { responses: Record<string, { content?: { 'application/json': { schema: unknown } } }> }>
  >;
}

/** Fetches the document; the checker throws, naming the call, when an answer does not match it. */
export async function openApiChecker(
  daemon: Daemon,
  /** How to fetch it, when daemon.get cannot (an HTTPS daemon with the test's own CA). */
  fetchDocument?: () => Promise<unknown>,
): Promise<{ document: OpenApiDocument; check(path: string, method: string, status: number, body: unknown): void }> {
  const document = (
    fetchDocument === undefined ? (await daemon.get('/v1/openapi.json')).json : await fetchDocument()
  ) as OpenApiDocument;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats.default(ajv);
  ajv.addSchema({ $id: 'doc', components: document.components });
  const check = (path: string, method: string, status: number, body: unknown): void => {
    const response = document.paths[path]?.[method]?.responses[String(status)];
    expect(response).toBeDefined();
    const schema = response?.content?.['application/json'].schema;
    if (schema === undefined) return;
    const validate = ajv.compile({
      $ref: undefined,
      ...JSON.parse(JSON.stringify(schema).replaceAll('"#/components', '"doc#/components')),
    });
    if (!validate(body))
      throw new Error(
        `${method.toUpperCase()} ${path} ${status}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body)}`,
      );
  };
  return { document, check };
}
