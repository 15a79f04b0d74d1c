/**
 * The format of the per-session access log the streams write: rendered into nginx's
 * configuration here, read back line by line by observe/traffic.ts.
 */

/** The name of the log format the per-stream files use. */
export const ACCESS_LOG_FORMAT_NAME = 'conductor_v1';

/**
 * One line per session. $bytes_received came from the client, $bytes_sent went to it. $status:
 * 200 served, 403 refused by the allow-list, 503 refused by a session limit (limit_conn), 502 no
 * backend answered, 500 other failures. `route` (a port that routes by server name): the id of
 * the route the session took, from a variable of the port's own configuration.
 */
function accessLogFormat(name: string, route?: string): string {
  return (
    `log_format ${name} escape=json '{"t":"$time_iso8601","port":$server_port,"proto":"$protocol",` +
    `"status":$status,"in":$bytes_received,"out":$bytes_sent,"s":$session_time,"up":"$upstream_addr","client":"$remote_addr"` +
    `${route === undefined ? '' : `,"route":"${route}"`}}';`
  );
}

export const ACCESS_LOG_FORMAT = accessLogFormat(ACCESS_LOG_FORMAT_NAME);

/** The log format of a port that routes by server name: its own, since it names the port's variable. */
export function routeLogFormatName(port: number): string {
  return `${ACCESS_LOG_FORMAT_NAME}_${port}`;
}

/** `variable` ($name) holds the id of the route a session took; defined in the port's file. */
export function routeLogFormat(port: number, variable: string): string {
  return accessLogFormat(routeLogFormatName(port), variable);
}
