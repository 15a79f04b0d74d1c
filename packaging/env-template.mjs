// The service's settings file, /etc/stream-conductor/conductor.env, as scripts/install.sh first
// writes it: every setting of the daemon's settings table (packages/daemon/src/config/settings.ts),
// each commented out with its help line and the default it has under the service.

/** Defaults the table words in its help text, as they are under stream-conductor.service (managed mode). */
const serviceDefaults = {
  CONDUCTOR_HOME: '/var/lib/stream-conductor',
  STREAM_CONFIG_PATH: '/var/lib/stream-conductor/stream.d',
  BIND_ADDRESS: '127.0.0.1',
  CONDUCTOR_NGINX_HANDOFF: 'false',
};

/** The file's text, from the rows of the daemon's settings table. */
export function envTemplate(rows) {
  const lines = [
    '# stream-conductor service settings, read by systemd (EnvironmentFile= of stream-conductor.service)',
    '# at each start: `systemctl restart stream-conductor` after a change. One VARIABLE=value a line; a',
    '# line that starts with # is ignored. Each setting shows its default under the service: remove',
    '# the # and change the value to set it. `conductor-daemon --help` says the same.',
    '# Mode 0600, root: systemd reads this file, the daemon only gets the values. A token is better',
    '# kept in a file of its own (CONDUCTOR_TOKEN_FILE, owned by stream-conductor, mode 0600).',
    '# The unit keeps the state in /var/lib/stream-conductor (the only place it may write): moving',
    '# CONDUCTOR_HOME or STREAM_CONFIG_PATH needs ReadWritePaths= in a drop-in (systemctl edit).',
  ];
  for (const [, setting] of rows) {
    const value = serviceDefaults[setting.env] ?? setting.fallback ?? (setting.boolean ? 'false' : undefined);
    const unset = value === undefined && !setting.help.includes('default');
    lines.push('', `# ${setting.help}${unset ? ' (unset by default)' : ''}`);
    lines.push(`#${setting.env}=${value ?? ''}`);
  }
  return `${lines.join('\n')}\n`;
}
