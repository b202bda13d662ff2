/** Where the CLI writes and what environment it reads; tests hand in their own. */
export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
  env: NodeJS.ProcessEnv;
  /** Whether stderr is a terminal (the progress bar is drawn only then). @defaultValue false */
  stderrIsTty?: boolean;
  /** Draws on stderr without a newline (the progress bar). */
  errRaw?: (text: string) => void;
  /** Sets the exit code the command ends with (main hands its own in). */
  setExitCode?: (code: number) => void;
}

/** Bad input the user can fix (an unknown id, a bad option value): exit code 2 with a message. */
export class CliUsageError extends Error {
  readonly code = 'usage';
}

/** Plain output: a header line, then one tab-separated line per row. */
export function printTable(io: CliIo, header: string[], rows: (string | number)[][]): void {
  io.out(header.join('\t'));
  for (const r of rows) io.out(r.join('\t'));
}
