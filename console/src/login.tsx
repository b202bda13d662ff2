import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, errorText } from './api.js';
import './styles.css';

/**
 * Sign-in: the token is posted once and answered with an HttpOnly, SameSite=Strict cookie; the
 * page never stores it (no local storage, no cookie a script could read).
 */
function Login() {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // Already signed in, or no token needed: straight to the console.
  useEffect(() => {
    fetch('/console/api/session', { credentials: 'same-origin' }).then(
      (r) => r.ok && window.location.replace('/console'),
      () => undefined,
    );
  }, []);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api('POST', '/console/session', { token });
      setToken('');
      window.location.assign('/console');
    } catch (err) {
      setError(errorText(err));
      setBusy(false);
    }
  };
  return (
    <main class="login" id="main">
      <h1>action-relay console</h1>
      <form onSubmit={submit}>
        <div class="field">
          <label for="token">API token</label>
          <input
            id="token"
            type="password"
            autoComplete="current-password"
            required
            value={token}
            aria-invalid={error ? true : undefined}
            aria-describedby={error ? 'token-problem' : 'token-hint'}
            onInput={(e) => setToken((e.currentTarget as HTMLInputElement).value)}
          />
          <p class="hint" id="token-hint">
            ADMIN_TOKEN, or a token of API_TOKENS_FILE. The browser keeps a session cookie (12 h), not the token.
          </p>
          {error && (
            <p class="problem" id="token-problem" role="alert">
              {error}
            </p>
          )}
        </div>
        <button type="submit" class="primary" disabled={busy || token === ''}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

render(<Login />, document.getElementById('app') as HTMLElement);
