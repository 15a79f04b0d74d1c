/**
 * Shell completion for bash and zsh, generated from the command definitions themselves so that it
 * never drifts from them. Ports of existing streams complete from the daemon (`conductor ls --json`).
 */
import type { Command } from 'commander';
import { formatsOf, OUTPUT_FORMATS } from '../output-formats.js';

export interface CommandShape {
  name: string;
  /** The command's own name when `name` is an alias. */
  command: string;
  options: string[];
}

/** Options whose values are one of a few words. */
const CHOICES: Record<string, string[]> = { '--balance': ['round-robin', 'least-conn', 'hash-ip'] };
/** Commands whose first argument is the port of an existing stream. */
const PORT_COMMANDS = ['rm', 'remove', 'get', 'renew', 'drain'];

/** The global options that take a value (skipped with it when looking for the command word). */
function valuedGlobals(program: Command): string {
  return program.options
    .filter((option) => option.required || option.optional)
    .flatMap((option) => [option.short, option.long].filter((flag): flag is string => flag !== undefined))
    .join('|');
}

/** -o: the formats each command takes. */
function formatCases(commands: CommandShape[], line: (names: string, formats: string) => string): string {
  return commands.map((command) => line(command.name, formatsOf(command.command).join(' '))).join('\n');
}

/** The names of the contexts in the config file, for --context and `context use|show|rm`. */
const CONTEXTS = 'conductor context ls -q 2>/dev/null';
/** The subcommands of `context` and their options. */
function contextShape(program: Command): CommandShape[] {
  const context = program.commands.find((command) => command.name() === 'context');
  return (context?.commands ?? []).map((command) => ({
    name: command.name(),
    command: `context ${command.name()}`,
    options: [...command.options.flatMap((option) => (option.long ? [option.long] : [])), '--help'],
  }));
}

export function shapeOf(program: Command): { global: string[]; commands: CommandShape[] } {
  const longs = (command: Command): string[] => command.options.flatMap((option) => (option.long ? [option.long] : []));
  const commands: CommandShape[] = [];
  for (const command of program.commands) {
    for (const name of [command.name(), ...command.aliases()])
      commands.push({ name, command: command.name(), options: [...longs(command), '--help'] });
  }
  return { global: [...longs(program), '--help'], commands };
}

const PORTS = `conductor ls --json 2>/dev/null | grep -o '"port": [0-9]*' | grep -o '[0-9]*'`;

export function bashCompletion(program: Command): string {
  const { global, commands } = shapeOf(program);
  const subs = contextShape(program);
  const subCases = subs.map((sub) => `      ${sub.name}) opts="${sub.options.join(' ')}" ;;`).join('\n');
  const cases = commands.map((command) => `    ${command.name}) opts="${command.options.join(' ')}" ;;`).join('\n');
  const choices = Object.entries(CHOICES)
    .map(([option, words]) => `    ${option}) COMPREPLY=( $(compgen -W "${words.join(' ')}" -- "$cur") ); return ;;`)
    .join('\n');
  return `# bash completion for conductor: source <(conductor completion bash)
_conductor() {
  local cur prev cmd sub opts i where=""
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  cmd=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      --url|--context) where="$where \${COMP_WORDS[i]} \${COMP_WORDS[i+1]}"; ((i++)) ;;
      ${valuedGlobals(program)}) ((i++)) ;;
      -*) ;;
      *) cmd="\${COMP_WORDS[i]}"; break ;;
    esac
  done
  case "$prev" in
${choices}
    --context) COMPREPLY=( $(compgen -W "$(${CONTEXTS})" -- "$cur") ); return ;;
    -f|--file|--token-file|--ca|--cert|--key|--tls-cert|--tls-key|--backend-ca) COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
    -o|--output)
      case "$cmd" in
${formatCases(commands, (name, formats) => `        ${name}) opts="${formats}" ;;`)}
        *) opts="${OUTPUT_FORMATS.join(' ')}" ;;
      esac
      COMPREPLY=( $(compgen -W "$opts" -- "$cur") ); return ;;
  esac
  if [ -z "$cmd" ]; then
    COMPREPLY=( $(compgen -W "${commands.map((command) => command.name).join(' ')} ${global.join(' ')}" -- "$cur") )
    return
  fi
  opts=""
  case "$cmd" in
${cases}
  esac
  if [ "$cmd" = context ]; then
    sub=""
    for ((i = i + 1; i < COMP_CWORD; i++)); do
      case "\${COMP_WORDS[i]}" in -*) ;; *) sub="\${COMP_WORDS[i]}"; break ;; esac
    done
    if [ -z "$sub" ]; then
      [[ "$cur" != -* ]] && opts="${subs.map((sub) => sub.name).join(' ')}"
    else
      case "$sub" in
${subCases}
      esac
      case "$sub" in
        use|show|rm) [[ "$cur" != -* ]] && { COMPREPLY=( $(compgen -W "$(${CONTEXTS})" -- "$cur") ); return; } ;;
      esac
    fi
  fi
  if [[ "$cur" != -* ]]; then
    case "$cmd" in
      ${PORT_COMMANDS.join('|')}) COMPREPLY=( $(compgen -W "$(${PORTS.replace('conductor ', 'conductor $where ')})" -- "$cur") ); return ;;
      completion) COMPREPLY=( $(compgen -W "bash zsh" -- "$cur") ); return ;;
    esac
  fi
  COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
}
complete -F _conductor conductor
`;
}

export function zshCompletion(program: Command): string {
  const { global, commands } = shapeOf(program);
  const subs = contextShape(program);
  const subCases = subs.map((sub) => `      ${sub.name}) opts=(${sub.options.join(' ')}) ;;`).join('\n');
  const cases = commands.map((command) => `    ${command.name}) opts=(${command.options.join(' ')}) ;;`).join('\n');
  const choices = Object.entries(CHOICES)
    .map(([option, words]) => `    ${option}) compadd -- ${words.join(' ')}; return ;;`)
    .join('\n');
  return `#compdef conductor
# zsh completion for conductor: source <(conductor completion zsh)
_conductor() {
  local cmd="" sub="" prev="\${words[CURRENT-1]}" i
  local -a opts where
  for ((i = 2; i < CURRENT; i++)); do
    case "\${words[i]}" in
      --url|--context) where+=("\${words[i]}" "\${words[i+1]}"); ((i++)) ;;
      ${valuedGlobals(program)}) ((i++)) ;;
      -*) ;;
      *) cmd="\${words[i]}"; break ;;
    esac
  done
  case "$prev" in
${choices}
    --context) compadd -- $(${CONTEXTS}); return ;;
    -f|--file|--token-file|--ca|--cert|--key|--tls-cert|--tls-key|--backend-ca) _files; return ;;
    -o|--output)
      case "$cmd" in
${formatCases(commands, (name, formats) => `        ${name}) compadd -- ${formats} ;;`)}
        *) compadd -- ${OUTPUT_FORMATS.join(' ')} ;;
      esac
      return ;;
  esac
  if [[ -z "$cmd" ]]; then
    compadd -- ${commands.map((command) => command.name).join(' ')} ${global.join(' ')}
    return
  fi
  case "$cmd" in
${cases}
  esac
  if [[ "$cmd" == context ]]; then
    for ((i = i + 1; i < CURRENT; i++)); do
      case "\${words[i]}" in -*) ;; *) sub="\${words[i]}"; break ;; esac
    done
    if [[ -z "$sub" ]]; then
      [[ "\${words[CURRENT]}" != -* ]] && opts=(${subs.map((sub) => sub.name).join(' ')})
    else
      case "$sub" in
${subCases}
      esac
      case "$sub" in
        use|show|rm) [[ "\${words[CURRENT]}" != -* ]] && { compadd -- $(${CONTEXTS}); return; } ;;
      esac
    fi
  fi
  if [[ "\${words[CURRENT]}" != -* ]]; then
    case "$cmd" in
      ${PORT_COMMANDS.join('|')}) compadd -- $(${PORTS.replace('conductor ', 'conductor "${where[@]}" ')}); return ;;
      completion) compadd -- bash zsh; return ;;
    esac
  fi
  compadd -- "\${opts[@]}"
}
if [[ "$funcstack[1]" == "_conductor" ]]; then _conductor "$@"; else compdef _conductor conductor; fi
`;
}
