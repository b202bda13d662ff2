import { useEffect, useState } from 'preact/hooks';
import { api, errorText, type ActionRow, type Counts } from './api.js';

/** How often the counts are read again. */
const REFRESH_MS = 5000;

function CountCells({ c, label }: { c: Counts; label: string }) {
  return (
    <>
      <td class="num" data-label={`${label} delivered`}>
        {c.delivered}
      </td>
      <td class="num" data-label={`${label} retries`}>
        {c.retries}
      </td>
      <td class={`num${c.dead > 0 ? ' bad' : ''}`} data-label={`${label} dead`}>
        {c.dead}
      </td>
    </>
  );
}

/** Every action with its live counts; search by id or name. */
export function ActionsPage({ canEdit }: { canEdit: boolean }) {
  const [rows, setRows] = useState<ActionRow[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [updated, setUpdated] = useState<string>('');
  const [query, setQuery] = useState(() => new URLSearchParams(window.location.hash.split('?')[1] ?? '').get('q') ?? '');

  useEffect(() => {
    let stopped = false;
    const load = () =>
      api<{ generatedAt: string; items: ActionRow[] }>('GET', '/console/api/activity').then(
        (r) => {
          if (stopped) return;
          setRows(r.items);
          setUpdated(new Date(r.generatedAt).toLocaleTimeString());
          setError(null);
        },
        (err: unknown) => !stopped && setError(errorText(err)),
      );
    void load();
    const timer = setInterval(load, REFRESH_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, []);

  const q = query.trim().toLowerCase();
  const shown = (rows ?? []).filter((r) => !q || r.id.toLowerCase().includes(q) || r.name.toLowerCase().includes(q));
  return (
    <section aria-labelledby="actions-title">
      <div class="toolbar">
        <h1 id="actions-title">Actions</h1>
        <div class="field search">
          <label for="action-search">Search by id or name</label>
          <input id="action-search" type="search" value={query} onInput={(e) => setQuery((e.currentTarget as HTMLInputElement).value)} />
        </div>
        {canEdit && (
          <a class="button primary" href="#/actions/new">
            New action
          </a>
        )}
      </div>
      <p class="muted" aria-live="polite">
        {error
          ? `Counts unavailable: ${error}`
          : rows
            ? `${shown.length} of ${rows.length} actions · counts at ${updated}, every ${REFRESH_MS / 1000} s`
            : 'Loading…'}
      </p>
      <div class="table-wrap">
        <table class="actions">
          <caption class="sr-only">Actions with jobs ended in the last 15 minutes and the last hour</caption>
          <thead>
            <tr>
              <th scope="col" rowSpan={2}>
                Action
              </th>
              <th scope="col" rowSpan={2}>
                Endpoint
              </th>
              <th scope="colgroup" colSpan={3}>
                Last 15 min
              </th>
              <th scope="colgroup" colSpan={3}>
                Last hour
              </th>
              <th scope="col" rowSpan={2}>
                Circuit
              </th>
              <th scope="col" rowSpan={2}>
                <span class="sr-only">Links</span>
              </th>
            </tr>
            <tr>
              <th scope="col">Delivered</th>
              <th scope="col">Retries</th>
              <th scope="col">Dead</th>
              <th scope="col">Delivered</th>
              <th scope="col">Retries</th>
              <th scope="col">Dead</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((r) => (
              <tr key={r.id} data-action={r.id}>
                <th scope="row">
                  <a href={`#/actions/${encodeURIComponent(r.id)}`}>{r.id}</a>
                  <div class="muted small">{r.name}</div>
                </th>
                <td class="endpoint">
                  <code>{r.method}</code> <span class="wrap">{r.url}</span>
                </td>
                <CountCells c={r.last15m} label="15 min" />
                <CountCells c={r.lastHour} label="1 h" />
                <td>
                  <span class={`badge ${r.circuit}`} title={`rate-limit key ${r.limitKey}`}>
                    {r.circuit}
                  </span>
                </td>
                <td>
                  <a href={`#/dead-letters?actionId=${encodeURIComponent(r.id)}`} aria-label={`Dead letters of ${r.id}`}>
                    Dead letters
                  </a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {rows && rows.length === 0 && <p>No action is defined yet.</p>}
    </section>
  );
}
