import { useEffect, useRef, useState } from 'preact/hooks';
import { api, errorText, replayedJobIds, type DeadLetterRecord, type DlqFilter, type DlqSummary, type JobState } from './api.js';
import { Confirm, fmtJson } from './ui.js';
import { DEAD_REASONS } from '../../src/errors/dead-reasons.js';

const PAGE_SIZE = 50;
const REASONS = DEAD_REASONS;

/** The filter in the address (#/dead-letters?actionId=…), so that a filtered view can be linked. */
function filterFromHash(): DlqFilter {
  const q = new URLSearchParams(window.location.hash.split('?')[1] ?? '');
  const f: DlqFilter = {};
  for (const k of ['actionId', 'reason', 'since', 'until'] as const) {
    const v = q.get(k);
    if (v) f[k] = v;
  }
  const status = q.get('status');
  if (status && /^\d+$/.test(status)) f.status = Number(status);
  return f;
}

function toQuery(f: DlqFilter): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v !== undefined && v !== '') q.set(k, String(v));
  return q.toString();
}

const isEmpty = (f: DlqFilter) => Object.values(f).every((v) => v === undefined || v === '');

/** `<input type=datetime-local>` speaks local time without a zone; the API takes ISO date-times. */
const localToIso = (v: string) => (v ? new Date(v).toISOString() : undefined);
const isoToLocal = (v: string | undefined) => {
  if (!v) return '';
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return '';
  return new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
};

/**
 * A replay or purge being confirmed: the ids the dry run counted, acted on as they are. Dead
 * letters that arrive between the count and the confirmation are left alone, and with a filter,
 * a counted one that no longer matches it is too.
 */
type Operation = { op: 'replay' | 'purge'; target: 'selection' | 'filter'; count: number; jobIds: string[]; filter?: DlqFilter };

/** Ids per request of a confirmed operation: well inside the API's body limit. */
const IDS_PER_REQUEST = 1000;

interface Tracking {
  jobIds: string[];
  states: Record<string, JobState['state']>;
  done: boolean;
}

/** Polls the states of replayed jobs until each has ended (or two minutes have passed). */
function useTracking() {
  const [tracking, setTracking] = useState<Tracking | null>(null);
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEffect(() => () => clearTimeout(timer.current), []);
  const start = (jobIds: string[]) => {
    clearTimeout(timer.current);
    const ids = jobIds.slice(0, 500);
    const until = Date.now() + 120_000;
    setTracking({ jobIds, states: {}, done: ids.length === 0 });
    if (ids.length === 0) return;
    const poll = async () => {
      try {
        const r = await api<{ items: JobState[] }>('POST', '/console/api/jobs', { jobIds: ids });
        const states = Object.fromEntries(r.items.map((j) => [j.jobId, j.state]));
        const done = r.items.every((j) => j.state === 'delivered' || j.state === 'dead' || j.state === 'unknown') || Date.now() > until;
        setTracking({ jobIds, states, done });
        if (!done) timer.current = setTimeout(() => void poll(), 1000);
      } catch {
        timer.current = setTimeout(() => void poll(), 2000);
      }
    };
    void poll();
  };
  return { tracking, start };
}

function TrackingView({ t }: { t: Tracking }) {
  const counts: Record<string, number> = {};
  for (const s of Object.values(t.states)) counts[s] = (counts[s] ?? 0) + 1;
  const dead = Object.entries(t.states).filter(([, s]) => s === 'dead');
  const pending = t.jobIds.slice(0, 500).length - (counts.delivered ?? 0) - (counts.dead ?? 0) - (counts.unknown ?? 0);
  return (
    <div class="result" role="status" aria-live="polite" id="replay-outcome">
      <h2>Replayed jobs</h2>
      <p>
        {`${t.jobIds.length} replayed: `}
        <strong class="ok">{`${counts.delivered ?? 0} delivered`}</strong>
        {`, `}
        <strong class={dead.length > 0 ? 'bad' : ''}>{`${counts.dead ?? 0} dead again`}</strong>
        {`, ${Math.max(0, pending)} still on their way`}
        {t.done ? '.' : '…'}
        {t.jobIds.length > 500 ? ' (outcome of the first 500 shown)' : ''}
      </p>
      <ul class="job-states" aria-label="Replayed jobs and their state">
        {t.jobIds.slice(0, 20).map((id) => (
          <li key={id}>
            <code>{id}</code> <span class={`badge ${t.states[id] ?? 'waiting'}`}>{t.states[id] ?? 'waiting'}</span>
          </li>
        ))}
        {t.jobIds.length > 20 && <li class="muted">{`and ${t.jobIds.length - 20} more`}</li>}
      </ul>
      {dead.length > 0 && (
        <p>
          {'Dead again (their new dead letters): '}
          {dead.slice(0, 20).map(([id]) => (
            <a key={id} href={`#/dead-letters/${encodeURIComponent(id)}`} class="job-link">
              {id}
            </a>
          ))}
        </p>
      )}
    </div>
  );
}

function AttemptView({ a }: { a: DeadLetterRecord['attempts'][number] }) {
  return (
    <details class="attempt" open>
      <summary>
        {`Attempt ${a.attempt} · ${new Date(a.startedAt).toLocaleString()} · ${a.durationMs} ms · `}
        {a.response ? `HTTP ${a.response.status}` : a.error ? a.error.code : ''}
      </summary>
      <h4>Request</h4>
      <p>
        <code class="method">{a.request.method}</code> <code class="wrap">{a.request.url}</code>
      </p>
      <pre aria-label={`Attempt ${a.attempt} request headers`}>{fmtJson(a.request.headers)}</pre>
      {a.response && (
        <>
          <h4>{`Response ${a.response.status}`}</h4>
          <pre aria-label={`Attempt ${a.attempt} response headers`}>{fmtJson(a.response.headers)}</pre>
          <pre aria-label={`Attempt ${a.attempt} response body`}>{a.response.body}</pre>
        </>
      )}
      {a.error && (
        <>
          <h4>Error</h4>
          <p>{`${a.error.code}: ${a.error.message}`}</p>
        </>
      )}
    </details>
  );
}

/** One dead letter: the job, why it died, every attempt; replay or purge it. */
function DeadLetterDetail({ jobId, canReplay, canPurge }: { jobId: string; canReplay: boolean; canPurge: boolean }) {
  const [rec, setRec] = useState<DeadLetterRecord | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<'replay' | 'purge' | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const { tracking, start } = useTracking();
  useEffect(() => {
    setRec(null);
    setError(null);
    api<DeadLetterRecord>('GET', `/v1/dlq/${encodeURIComponent(jobId)}`).then(setRec, (err: unknown) => setError(errorText(err)));
  }, [jobId]);

  const run = async (op: 'replay' | 'purge') => {
    setConfirm(null);
    try {
      if (op === 'replay') {
        const r = await api<{ replayed: number; jobIds?: string[]; replays?: { jobId: string }[] }>('POST', '/v1/dlq/replay', {
          jobIds: [jobId],
        });
        setMessage(`Replayed as job ${replayedJobIds(r).join(', ')}.`);
        start(replayedJobIds(r));
      } else {
        await api('DELETE', `/v1/dlq/${encodeURIComponent(jobId)}`);
        setMessage('Purged.');
      }
    } catch (err) {
      setMessage(`Failed: ${errorText(err)}`);
    }
  };

  return (
    <section aria-labelledby="dl-title">
      <p>
        <a href="#/dead-letters">← All dead letters</a>
      </p>
      <h1 id="dl-title">{`Dead letter ${jobId}`}</h1>
      {error && <p role="alert">{error}</p>}
      {message && <p role="status">{message}</p>}
      {tracking && <TrackingView t={tracking} />}
      {rec && (
        <>
          <dl class="facts">
            <dt>Action</dt>
            <dd>
              <a href={`#/actions/${encodeURIComponent(rec.actionId)}`}>{rec.actionId}</a>
            </dd>
            <dt>Reason</dt>
            <dd>{rec.reason}</dd>
            <dt>Status</dt>
            <dd>{rec.status ?? '—'}</dd>
            <dt>Failed at</dt>
            <dd>{new Date(rec.failedAt).toLocaleString()}</dd>
            <dt>Enqueued at</dt>
            <dd>{new Date(rec.job.enqueuedAt).toLocaleString()}</dd>
          </dl>
          <div class="buttons">
            <button type="button" class="primary" disabled={!canReplay} onClick={() => setConfirm('replay')}>
              Replay
            </button>
            <button type="button" class="danger" disabled={!canPurge} onClick={() => setConfirm('purge')}>
              Purge
            </button>
          </div>
          <h2>Job</h2>
          <pre aria-label="Job params and context">
            {fmtJson({ params: rec.job.params, context: rec.job.context, idempotencyKey: rec.job.idempotencyKey })}
          </pre>
          <h2>{`Attempts (${rec.attempts.length})`}</h2>
          {rec.attempts.map((a) => (
            <AttemptView a={a} key={a.attempt} />
          ))}
        </>
      )}
      {confirm && (
        <Confirm
          title={confirm === 'replay' ? 'Replay this dead letter?' : 'Purge this dead letter?'}
          body={
            confirm === 'replay' ? (
              <p>It is delivered again with the action’s current definition.</p>
            ) : (
              <p>Its record is deleted for good.</p>
            )
          }
          confirm={confirm === 'replay' ? 'Replay' : 'Purge'}
          danger={confirm === 'purge'}
          onConfirm={() => void run(confirm)}
          onCancel={() => setConfirm(null)}
        />
      )}
    </section>
  );
}

/** Dead letters, filtered and paged (never all rendered); replay or purge a selection or the filter. */
export function DeadLettersPage({ jobId, canReplay, canPurge }: { jobId: string | null; canReplay: boolean; canPurge: boolean }) {
  if (jobId) return <DeadLetterDetail jobId={jobId} canReplay={canReplay} canPurge={canPurge} />;
  return <DeadLetterList canReplay={canReplay} canPurge={canPurge} />;
}

function DeadLetterList({ canReplay, canPurge }: { canReplay: boolean; canPurge: boolean }) {
  const [filter, setFilter] = useState<DlqFilter>(filterFromHash);
  const [draft, setDraft] = useState<DlqFilter>(filter);
  const [actions, setActions] = useState<string[]>([]);
  const [page, setPage] = useState<{ items: DlqSummary[]; nextCursor: string | null } | null>(null);
  // Cursors of the pages before this one, to go back.
  const [cursors, setCursors] = useState<(string | undefined)[]>([]);
  const [cursor, setCursor] = useState<string | undefined>(undefined);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [error, setError] = useState<string | null>(null);
  const [operation, setOperation] = useState<Operation | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const [reload, setReload] = useState(0);
  const { tracking, start } = useTracking();

  useEffect(() => {
    api<{ items: { id: string }[] }>('GET', '/v1/actions').then(
      (r) => setActions(r.items.map((a) => a.id)),
      () => setActions([]),
    );
  }, []);

  useEffect(() => {
    const q = toQuery({ ...filter });
    api<{ items: DlqSummary[]; nextCursor: string | null }>(
      'GET',
      `/v1/dlq?${q}${q ? '&' : ''}limit=${PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    ).then(
      (r) => {
        setPage(r);
        setError(null);
      },
      (err: unknown) => setError(errorText(err)),
    );
  }, [filter, cursor, reload]);

  const apply = (f: DlqFilter) => {
    const clean = Object.fromEntries(Object.entries(f).filter(([, v]) => v !== undefined && v !== '')) as DlqFilter;
    setFilter(clean);
    setCursor(undefined);
    setCursors([]);
    setSelected(new Set());
    const q = toQuery(clean);
    history.replaceState(null, '', `#/dead-letters${q ? `?${q}` : ''}`);
  };

  /** The count a replay or purge of the filter would touch: a dry-run replay answers it. */
  const prepare = async (op: 'replay' | 'purge', target: 'selection' | 'filter') => {
    setMessage(null);
    try {
      const body = target === 'selection' ? { jobIds: [...selected] } : { filter };
      const dry = await api<{ matched: number; jobIds: string[] }>('POST', '/v1/dlq/replay', { ...body, dryRun: true });
      setOperation({ op, target, count: dry.matched, jobIds: dry.jobIds, ...(target === 'filter' ? { filter } : {}) });
    } catch (err) {
      setMessage(`Could not count: ${errorText(err)}`);
    }
  };

  const run = async (o: Operation) => {
    setOperation(null);
    let done = 0;
    const newJobIds: string[] = [];
    try {
      for (let i = 0; i < o.jobIds.length; i += IDS_PER_REQUEST) {
        const body = { jobIds: o.jobIds.slice(i, i + IDS_PER_REQUEST), ...(o.filter ? { filter: o.filter } : {}) };
        if (o.op === 'replay') {
          const r = await api<{ replayed: number; jobIds?: string[]; replays?: { jobId: string }[] }>('POST', '/v1/dlq/replay', body);
          done += r.replayed;
          newJobIds.push(...replayedJobIds(r));
        } else {
          done += (await api<{ purged: number }>('POST', '/v1/dlq/purge', body)).purged;
        }
      }
      setMessage(`${o.op === 'replay' ? 'Replayed' : 'Purged'} ${done} dead letter${done === 1 ? '' : 's'}.`);
    } catch (err) {
      setMessage(`Failed after ${done} of ${o.count}: ${errorText(err)}`);
    }
    if (newJobIds.length > 0) start(newJobIds);
    setSelected(new Set());
    setCursor(undefined);
    setCursors([]);
    setReload((n) => n + 1);
  };

  const items = page?.items ?? [];
  const allOnPage = items.length > 0 && items.every((i) => selected.has(i.jobId));
  const toggle = (id: string) =>
    setSelected((s) => {
      const next = new Set(s);
      if (next.has(id)) next.delete(id);
      else next.add(id);
      return next;
    });

  return (
    <section aria-labelledby="dlq-title">
      <h1 id="dlq-title">Dead letters</h1>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          apply(draft);
        }}
        aria-label="Filter dead letters"
      >
        <div class="field">
          <label for="filter-action">Action</label>
          <select
            id="filter-action"
            value={draft.actionId ?? ''}
            onChange={(e) => setDraft({ ...draft, actionId: (e.currentTarget as HTMLSelectElement).value || undefined })}
          >
            <option value="">all actions</option>
            {[...new Set([...actions, ...(draft.actionId ? [draft.actionId] : [])])].map((a) => (
              <option key={a} value={a}>
                {a}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="filter-reason">Reason</label>
          <select
            id="filter-reason"
            value={draft.reason ?? ''}
            onChange={(e) => setDraft({ ...draft, reason: (e.currentTarget as HTMLSelectElement).value || undefined })}
          >
            <option value="">any reason</option>
            {REASONS.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        </div>
        <div class="field narrow">
          <label for="filter-status">HTTP status</label>
          <input
            id="filter-status"
            inputMode="numeric"
            value={draft.status ?? ''}
            onInput={(e) => {
              const v = (e.currentTarget as HTMLInputElement).value.trim();
              setDraft({ ...draft, status: /^\d+$/.test(v) ? Number(v) : undefined });
            }}
          />
        </div>
        <div class="field">
          <label for="filter-since">Failed since</label>
          <input
            id="filter-since"
            type="datetime-local"
            value={isoToLocal(draft.since)}
            onInput={(e) => setDraft({ ...draft, since: localToIso((e.currentTarget as HTMLInputElement).value) })}
          />
        </div>
        <div class="field">
          <label for="filter-until">Failed until</label>
          <input
            id="filter-until"
            type="datetime-local"
            value={isoToLocal(draft.until)}
            onInput={(e) => setDraft({ ...draft, until: localToIso((e.currentTarget as HTMLInputElement).value) })}
          />
        </div>
        <div class="buttons">
          <button type="submit" class="primary">
            Apply filter
          </button>
          <button
            type="button"
            onClick={() => {
              setDraft({});
              apply({});
            }}
          >
            Clear
          </button>
        </div>
      </form>

      <div class="toolbar">
        <span class="muted" aria-live="polite">
          {error
            ? `Could not load: ${error}`
            : page
              ? `${items.length} shown on page ${cursors.length + 1}${selected.size ? ` · ${selected.size} selected` : ''}`
              : 'Loading…'}
        </span>
        <button type="button" disabled={!canReplay || selected.size === 0} onClick={() => void prepare('replay', 'selection')}>
          Replay selected
        </button>
        <button type="button" class="danger" disabled={!canPurge || selected.size === 0} onClick={() => void prepare('purge', 'selection')}>
          Purge selected
        </button>
        <button
          type="button"
          disabled={!canReplay || isEmpty(filter) || items.length === 0}
          onClick={() => void prepare('replay', 'filter')}
        >
          Replay all matching
        </button>
        <button
          type="button"
          class="danger"
          disabled={!canPurge || isEmpty(filter) || items.length === 0}
          onClick={() => void prepare('purge', 'filter')}
        >
          Purge all matching
        </button>
      </div>
      {isEmpty(filter) && <p class="hint">Set a filter to replay or purge everything it matches.</p>}
      {message && <p role="status">{message}</p>}
      {tracking && <TrackingView t={tracking} />}

      <div class="table-wrap">
        <table class="dlq">
          <caption class="sr-only">Dead letters, newest first</caption>
          <thead>
            <tr>
              <th scope="col">
                <input
                  type="checkbox"
                  aria-label="Select every dead letter on this page"
                  checked={allOnPage}
                  onChange={() => setSelected(allOnPage ? new Set() : new Set(items.map((i) => i.jobId)))}
                />
              </th>
              <th scope="col">Job</th>
              <th scope="col">Action</th>
              <th scope="col">Reason</th>
              <th scope="col">Status</th>
              <th scope="col">Attempts</th>
              <th scope="col">Failed at</th>
            </tr>
          </thead>
          <tbody>
            {items.map((d) => (
              <tr key={d.jobId}>
                <td>
                  <input
                    type="checkbox"
                    aria-label={`Select ${d.jobId}`}
                    checked={selected.has(d.jobId)}
                    onChange={() => toggle(d.jobId)}
                  />
                </td>
                <th scope="row">
                  <a href={`#/dead-letters/${encodeURIComponent(d.jobId)}`} class="job-link">
                    {d.jobId}
                  </a>
                </th>
                <td>{d.actionId}</td>
                <td>{d.reason}</td>
                <td>{d.status ?? '—'}</td>
                <td class="num">{d.attempts}</td>
                <td>{new Date(d.failedAt).toLocaleString()}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {page && items.length === 0 && <p>No dead letter matches.</p>}
      <nav class="pager" aria-label="Pages">
        <button
          type="button"
          disabled={cursors.length === 0}
          onClick={() => {
            setCursor(cursors[cursors.length - 1]);
            setCursors(cursors.slice(0, -1));
          }}
        >
          Previous page
        </button>
        <button
          type="button"
          disabled={!page?.nextCursor}
          onClick={() => {
            setCursors([...cursors, cursor]);
            setCursor(page?.nextCursor ?? undefined);
          }}
        >
          Next page
        </button>
      </nav>

      {operation && (
        <Confirm
          title={`${operation.op === 'replay' ? 'Replay' : 'Purge'} ${operation.count} dead letter${operation.count === 1 ? '' : 's'}?`}
          body={
            <p>
              {operation.target === 'filter'
                ? `Every dead letter matching ${toQuery(filter).replaceAll('&', ', ')}`
                : 'The selected dead letters'}
              {operation.op === 'replay'
                ? ' will be delivered again with their action’s current definition, behind live traffic.'
                : ' will be deleted for good.'}
            </p>
          }
          confirm={operation.op === 'replay' ? `Replay ${operation.count}` : `Purge ${operation.count}`}
          danger={operation.op === 'purge'}
          onConfirm={() => void run(operation)}
          onCancel={() => setOperation(null)}
        />
      )}
    </section>
  );
}
