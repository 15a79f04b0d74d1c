// @ts-check
/** The Markdown report of a run, and the daemon log lines around its first violations. */
import { readFile } from 'node:fs/promises';
import { cpus, release } from 'node:os';
import { performance } from 'node:perf_hooks';
import { fmt, percentile, wall } from './util.mjs';

/** @typedef {import('./options.mjs').Options} Options */
/** @typedef {import('./state.mjs').PhaseMetrics} PhaseMetrics */
/** @typedef {import('./state.mjs').Soak} Soak */

/**
 * @param {Soak} soak
 * @param {{ options: Options, startedAt: Date, startupMs: number, baseline: PhaseMetrics | undefined, stop: { clean: boolean, notes: string[] } | undefined, growth: string[], failed: boolean, nginxVersion: string, nginxLayout: string, fatal: string | undefined, home: string, kept: boolean }} run
 */
export function report(soak, run) {
  const { options } = run;
  const out = [];
  const totalOps = soak.phases.reduce((sum, phase) => sum + phase.done, 0);
  out.push(`# stream-conductor soak report`);
  out.push('');
  out.push(
    `**Result: ${run.failed ? 'FAIL' : 'PASS'}** (${soak.violationCount} violations${soak.deadlineHit ? ', deadline reached' : ''}${soak.aborted ? ', interrupted' : ''})`,
  );
  out.push('');
  out.push(`- date: ${run.startedAt.toISOString()}`);
  out.push(
    `- machine: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown cpu'}), Linux ${release()}, Node ${process.version}, ${run.nginxVersion}`,
  );
  out.push(
    `- flags: --phases ${options.phases} --ops ${options.ops} --ports ${options.ports} --clients ${options.clients} --deadline ${options.deadlineMin} --sample ${options.sample} --seed ${options.seed}${options.rawRss ? ' --raw-rss' : ''}`,
  );
  out.push(
    `- range: ${soak.daemon.start}-${soak.daemon.end} (API on 127.0.0.1:${soak.daemon.apiPort}), daemon start-up ${fmt(run.startupMs, 0)} ms`,
  );
  out.push(`- nginx: ${run.nginxLayout}`);
  out.push(`- requests: ${totalOps} in ${soak.phases.length} phases`);
  if (run.fatal) out.push(`- aborted by an error: ${run.fatal}`);
  out.push('');

  out.push('## Phases');
  out.push('');
  out.push(
    '| phase | requests | seconds | req/s | batches | reloads | requests/batch | apply p50/max ms | live at end | daemon RSS MiB | daemon heap MiB | daemon peak RSS MiB | daemon fds | nginx procs | nginx RSS MiB | violations |',
  );
  out.push(
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  if (run.baseline) {
    const m = run.baseline;
    out.push(
      `| start | | | | | | | | ${m.live} | ${fmt(m.daemonRssKiB / 1024)} | ${fmt(m.heapUsedKiB / 1024)} | | ${m.daemonFds} | ${m.nginxProcesses} | ${fmt(m.nginxRssKiB / 1024)} | |`,
    );
  }
  for (const phase of soak.phases) {
    const seconds = (phase.ended - phase.started) / 1000;
    const m = phase.metrics;
    const applyMs = [...phase.log.applyMs].sort((a, b) => a - b);
    out.push(
      `| ${phase.n} | ${phase.done} | ${fmt(seconds)} | ${fmt(phase.done / seconds, 0)} | ${phase.log.applies} | ${phase.log.attempts} | ${fmt(phase.log.requests / Math.max(1, phase.log.applies))} | ${fmt(percentile(applyMs, 50), 0)} / ${fmt(applyMs[applyMs.length - 1] ?? NaN, 0)} | ${m?.live ?? '-'} | ${m ? fmt(m.daemonRssKiB / 1024) : '-'} | ${m ? fmt(m.heapUsedKiB / 1024) : '-'} | ${m ? fmt(m.peakRssKiB / 1024) : '-'} | ${m?.daemonFds ?? '-'} | ${m?.nginxProcesses ?? '-'} | ${m ? fmt(m.nginxRssKiB / 1024) : '-'} | ${phase.violations} |`,
    );
  }
  out.push('');
  out.push(
    `Batches, reloads and requests/batch come from the daemon's \`apply\` log lines: one per batch of one nginx master, whose \`attempts\` are its reloads (0 when every request of the batch was refused before reaching nginx); apply p50/max is over the batches that reloaded. Daemon RSS (VmRSS), heap and fds are read after the phase's checks, with the clients' connections closed${run.options.rawRss ? ' (--raw-rss: no GC forced, heap not read)' : ", right after a full GC forced through the daemon's inspector"}; peak RSS is the highest VmRSS sampled each second during the phase. nginx procs and RSS cover every master of the home and its workers (RSS summed, shared pages counted once per process).`,
  );
  out.push('');

  out.push('## Latency (ms) and answers per operation');
  out.push('');
  out.push('| phase | operation | count | p50 | p99 | max | answers |');
  out.push('| ---: | --- | ---: | ---: | ---: | ---: | --- |');
  const order = [
    'create',
    'create-bad',
    'race-create',
    'remove',
    'race-remove',
    'getstreams',
    'getfreeport',
    'hasstream',
  ];
  for (const phase of soak.phases) {
    for (const kind of order) {
      const stats = phase.stats.get(kind);
      if (!stats) continue;
      const sorted = [...stats.latencies].sort((a, b) => a - b);
      const answers = [...stats.outcomes.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([outcome, count]) => `${outcome} ${count}`)
        .join(', ');
      out.push(
        `| ${phase.n} | ${kind} | ${sorted.length} | ${fmt(percentile(sorted, 50))} | ${fmt(percentile(sorted, 99))} | ${fmt(sorted[sorted.length - 1] ?? NaN)} | ${answers} |`,
      );
    }
  }
  out.push('');
  out.push(
    'Every answer is predicted before it arrives: `exists` on create and `not found` on remove are the expected refusals of a port that had (had no) stream; `invalid input` / `out of range` are the bad creates. Any other answer is a violation.',
  );
  out.push('');

  out.push('## Checks per phase');
  out.push('');
  for (const phase of soak.phases)
    out.push(
      `- phase ${phase.n}: ${phase.checks.join(', ') || 'not checked'}${phase.retries ? `; ${phase.retries} requests re-sent after a kept-alive socket closed` : ''}; daemon log: ${phase.log.requestLines} request lines, ${phase.log.warn} warn, ${phase.log.error} error; nginx error.log (all masters): ${phase.nginxErrorLogLines} lines`,
    );
  out.push('');

  out.push('## Memory and descriptors');
  out.push('');
  for (const line of run.growth) out.push(`- ${line}`);
  out.push('');

  out.push('## Shutdown');
  out.push('');
  if (run.stop) for (const line of run.stop.notes) out.push(`- ${line}`);
  else out.push('- the daemon was not started');
  out.push(`- temporary home ${run.home} ${run.kept ? 'kept (--keep-home)' : 'removed'}`);
  out.push('');

  if (soak.violations.length > 0) {
    out.push('## Violations');
    out.push('');
    for (const v of soak.violations) {
      const when = v.send !== undefined ? ` [${wall(v.send)} .. ${wall(v.ack ?? v.send)}]` : '';
      out.push(`- ${v.phase === 0 ? 'run' : `phase ${v.phase}`}, ${v.check}${when}: ${v.message}`);
    }
    if (soak.violationCount > soak.violations.length)
      out.push(`- ... and ${soak.violationCount - soak.violations.length} more`);
    out.push('');
  }
  if (soak.logs.logProblems.length > 0 || soak.logs.nginxProblems.length > 0) {
    out.push('## Log lines worth a look');
    out.push('');
    out.push('```');
    for (const line of soak.logs.logProblems.slice(0, 60)) out.push(line);
    for (const line of soak.logs.nginxProblems.slice(0, 30)) out.push(`nginx ${line}`);
    out.push('```');
    out.push('');
  }
  if (run.failed && soak.relatedLog && soak.relatedLog.length > 0) {
    out.push('## Daemon log around the first violations');
    out.push('');
    out.push('```');
    for (const line of soak.relatedLog) out.push(line);
    out.push('```');
    out.push('');
  }
  return out.join('\n');
}

/**
 * Daemon log lines about the ports of the first violations, within a second of them.
 * @param {Soak} soak
 */
export async function relatedLogLines(soak) {
  const text = await readFile(soak.daemon.logPath, 'utf8').catch(() => '');
  const lines = text.split('\n');
  /** @type {string[]} */
  const out = [];
  for (const v of soak.violations.filter((one) => one.send !== undefined).slice(0, 5)) {
    const send = performance.timeOrigin + /** @type {number} */ (v.send);
    const ack = performance.timeOrigin + (v.ack ?? /** @type {number} */ (v.send));
    out.push(`--- phase ${v.phase}, ${v.check}${v.port ? `, port ${v.port}` : ''}: ${v.message.slice(0, 160)}`);
    let shown = 0;
    for (const line of lines) {
      const time = Date.parse(/"time":"([^"]+)"/.exec(line)?.[1] ?? '');
      // Requests on the port and problems within a second; the batches applied during the request.
      const near = time >= send - 1000 && time <= ack + 1000;
      const during = time >= send && time <= ack + 5;
      const aboutPort = v.port !== undefined && (line.includes(`/${v.port}/`) || line.includes(`/${v.port}"`));
      if (
        !(
          (near && (aboutPort || /"level":"(warn|error)"|"status":5/.test(line))) ||
          (during && /"msg":"apply"/.test(line))
        )
      )
        continue;
      out.push(line);
      shown += 1;
      if (shown >= 25) break;
    }
  }
  return out;
}
