import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/** The console's build: two pages (the app and its sign-in page) into dist/console, served by the API at /console. */
export default defineConfig({
  root: here('.'),
  base: '/console/',
  // Nothing is loaded at run time from anywhere but the API itself.
  publicDir: false,
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: here('../dist/console'),
    emptyOutDir: true,
    target: 'es2022',
    // Small enough to read in the browser's devtools; the API serves it compressed by no one, so keep it lean.
    sourcemap: false,
    rolldownOptions: { input: { index: here('index.html'), login: here('login.html') } },
  },
});
