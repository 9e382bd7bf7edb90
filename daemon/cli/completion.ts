import type { Command } from 'commander';

/** Every command path of the program with the words that may follow it (subcommands, then options). */
function tree(program: Command): Map<string, string[]> {
  const words = new Map<string, string[]>();
  const walk = (cmd: Command, path: string) => {
    const options = cmd.options.map((o) => o.long).filter((l): l is string => Boolean(l));
    words.set(path, [...cmd.commands.map((c) => c.name()), ...options, '--help']);
    for (const c of cmd.commands) walk(c, `${path} ${c.name()}`);
  };
  walk(program, 'hoody');
  return words;
}

/** A bash completion script for the program as built (so it never drifts from the commands). */
export function bashCompletion(program: Command): string {
  const entries = [...tree(program)].map(([path, words]) => `  [${JSON.stringify(path)}]=${JSON.stringify(words.join(' '))}`);
  return `# bash completion for hoody: source <(hoody completion bash), or save it to /etc/bash_completion.d/hoody
declare -gA _hoody_words=(
${entries.join('\n')}
)
_hoody() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path=hoody w i
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    [[ $w == -* ]] && continue
    [[ -n "\${_hoody_words["$path $w"]+x}" ]] && path="$path $w"
  done
  COMPREPLY=($(compgen -W "\${_hoody_words["$path"]}" -- "$cur"))
}
complete -F _hoody hoody
`;
}

export function completionCommands(program: Command): void {
  program
    .command('completion')
    .description('print a shell completion script: `source <(hoody completion bash)` (zsh: after `autoload bashcompinit && bashcompinit`)')
    .argument('[shell]', 'bash', 'bash')
    .action((shell: string) => {
      if (shell !== 'bash') throw Object.assign(new Error(`no completion for ${shell} (bash; zsh reads it through bashcompinit)`), { usage: true });
      process.stdout.write(bashCompletion(program));
    });
}
