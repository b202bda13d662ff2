/** Where the CLI writes and what environment it reads; tests hand in their own. */
export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
  env: NodeJS.ProcessEnv;
}
