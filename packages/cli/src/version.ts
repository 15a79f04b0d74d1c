/**
 * The CLI's version: package.json's, written into the bundle by build.mjs (the bundle is what the
 * `conductor` command runs), so that no file is read at start-up.
 */
declare const CONDUCTOR_CLI_VERSION: string | undefined;

export const version: string = typeof CONDUCTOR_CLI_VERSION === 'string' ? CONDUCTOR_CLI_VERSION : '0.0.0-unbundled';
