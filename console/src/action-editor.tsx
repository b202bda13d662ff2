import { useEffect, useRef, useState } from 'preact/hooks';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { api, ApiError, errorText, type FieldProblem, type StoredAction } from './api.js';
import { CaptureRows, KeyValueRows, ParameterRows, SecretRefField } from './editor-parts.js';
import { asDefinition, AUTH_TYPES, blankDefinition, fieldId, getIn, setIn, type Definition } from './form-model.js';
import { TryPanel } from './try-panel.js';
import { CheckboxField, Confirm, JsonField, NumberField, SelectField, TextField } from './ui.js';

type Tab = 'form' | 'yaml' | 'json';
const TABS: { id: Tab; label: string }[] = [
  { id: 'form', label: 'Form' },
  { id: 'yaml', label: 'YAML' },
  { id: 'json', label: 'JSON' },
];

/** Live validation: the server's checks of a save, asked a moment after the last change. */
function useValidation(def: Definition, enabled: boolean) {
  const [problems, setProblems] = useState<FieldProblem[]>([]);
  const [checking, setChecking] = useState(false);
  const seq = useRef(0);
  useEffect(() => {
    // A new action is not checked before its first change: an empty form is not a mistake.
    if (!enabled) return;
    const mine = ++seq.current;
    setChecking(true);
    const timer = setTimeout(() => {
      api<{ valid: boolean; problems: FieldProblem[] }>('POST', '/console/api/validate', def).then(
        (r) => {
          if (mine !== seq.current) return;
          setProblems(r.problems);
          setChecking(false);
        },
        (err: unknown) => {
          if (mine !== seq.current) return;
          setProblems([{ path: '', message: `could not validate: ${errorText(err)}` }]);
          setChecking(false);
        },
      );
    }, 250);
    return () => clearTimeout(timer);
  }, [def, enabled]);
  return { problems, checking, setProblems };
}

/** The YAML or JSON text of the definition; text that parses replaces the definition. */
function TextTab({
  def,
  format,
  onChange,
  disabled,
}: {
  def: Definition;
  format: 'yaml' | 'json';
  onChange: (d: Definition) => void;
  disabled: boolean;
}) {
  const render = (d: Definition) => (format === 'yaml' ? toYaml(d) : JSON.stringify(d, null, 2));
  const [text, setText] = useState(() => render(def));
  const [error, setError] = useState<string | null>(null);
  const last = useRef(JSON.stringify(def));
  useEffect(() => {
    const now = JSON.stringify(def);
    if (now !== last.current) {
      last.current = now;
      setText(render(def));
      setError(null);
    }
  }, [def]);
  const id = `definition-${format}`;
  return (
    <div class="field">
      <label for={id}>{format === 'yaml' ? 'Definition as YAML' : 'Definition as JSON'}</label>
      <textarea
        id={id}
        class="code tall"
        spellcheck={false}
        value={text}
        disabled={disabled}
        aria-invalid={error ? true : undefined}
        aria-describedby={error ? `${id}-problem` : undefined}
        onInput={(e) => {
          const t = (e.currentTarget as HTMLTextAreaElement).value;
          setText(t);
          try {
            const v = (format === 'yaml' ? parseYaml(t) : JSON.parse(t)) as unknown;
            if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('the definition is an object');
            setError(null);
            last.current = JSON.stringify(v);
            onChange(v as Definition);
          } catch (err) {
            setError(errorText(err));
          }
        }}
      />
      {error && (
        <p class="problem" id={`${id}-problem`} role="alert">
          {`Not ${format.toUpperCase()}: ${error} (the form keeps the last text that parsed)`}
        </p>
      )}
    </div>
  );
}

function AuthFields({ def, set, problems, disabled }: SectionProps) {
  const type = (getIn(def, 'auth.type') as string | undefined) ?? 'none';
  const field = (label: string, path: string, hint?: string) => (
    <TextField
      label={label}
      path={path}
      value={getIn(def, path)}
      problems={problems}
      disabled={disabled}
      onChange={(v) => set(path, v)}
      {...(hint ? { hint } : {})}
    />
  );
  const secret = (label: string, path: string) => (
    <SecretRefField
      label={label}
      path={path}
      value={getIn(def, path)}
      problems={problems}
      disabled={disabled}
      onChange={(v) => set(path, v)}
    />
  );
  const select = (label: string, path: string, options: readonly string[], empty?: string) => (
    <SelectField
      label={label}
      path={path}
      value={getIn(def, path)}
      options={options}
      problems={problems}
      disabled={disabled}
      onChange={(v) => set(path, v)}
      {...(empty !== undefined ? { empty } : {})}
    />
  );
  return (
    <fieldset>
      <legend>Authentication</legend>
      <SelectField
        label="Auth type"
        path="auth.type"
        value={type}
        options={AUTH_TYPES}
        problems={problems}
        disabled={disabled}
        onChange={(t) => set('auth', { type: t ?? 'none' })}
      />
      {type === 'apiKey' && (
        <div class="grid">
          {field('Key name', 'auth.name', 'The header or query parameter that carries the key.')}
          {select('Sent in', 'auth.in', ['header', 'query'], 'choose…')}
          {secret('Key value', 'auth.value')}
        </div>
      )}
      {type === 'basic' && (
        <div class="grid">
          {field('Username', 'auth.username')}
          {secret('Password', 'auth.password')}
        </div>
      )}
      {type === 'bearer' && secret('Token', 'auth.token')}
      {type === 'oauth2ClientCredentials' && (
        <div class="grid">
          {field('Token URL', 'auth.tokenUrl')}
          {field('Client id', 'auth.clientId')}
          {secret('Client secret', 'auth.clientSecret')}
          {field('Scope', 'auth.scope')}
          {field('Audience', 'auth.audience')}
          {select('Client authentication', 'auth.clientAuth', ['basic', 'body'], 'default (basic)')}
        </div>
      )}
      {type === 'customToken' && (
        <div class="grid">
          {field('Token request URL', 'auth.request.url')}
          {select('Token request method', 'auth.request.method', ['GET', 'POST'], 'choose…')}
          {select('Token request body type', 'auth.request.bodyType', ['json', 'form'], 'default (json)')}
          <JsonField
            label="Token request headers (JSON; a value may be { env } or { file })"
            path="auth.request.headers"
            value={getIn(def, 'auth.request.headers')}
            problems={problems}
            disabled={disabled}
            rows={3}
            onChange={(v) => set('auth.request.headers', v)}
          />
          <JsonField
            label="Token request body (JSON; secrets as { env } or { file })"
            path="auth.request.body"
            value={getIn(def, 'auth.request.body')}
            problems={problems}
            disabled={disabled}
            rows={4}
            onChange={(v) => set('auth.request.body', v)}
          />
          {field('Token path', 'auth.tokenPath', 'A dotted path in the answer (access_token), or $response.')}
          {field('Expires-in path', 'auth.expiresInPath')}
          <NumberField
            label="Cache TTL (ms)"
            path="auth.cacheTtlMs"
            value={getIn(def, 'auth.cacheTtlMs')}
            problems={problems}
            disabled={disabled}
            onChange={(v) => set('auth.cacheTtlMs', v)}
          />
          {select('Inject as', 'auth.inject.as', ['bearer', 'header', 'query'], 'choose…')}
          {field('Inject name', 'auth.inject.name', 'The header or query name (not for bearer).')}
        </div>
      )}
    </fieldset>
  );
}

interface SectionProps {
  def: Definition;
  set: (path: string, v: unknown) => void;
  problems: FieldProblem[];
  disabled: boolean;
}

function FormTab({ def, set, problems, disabled, isNew }: SectionProps & { isNew: boolean }) {
  const text = (label: string, path: string, hint?: string, placeholder?: string) => (
    <TextField
      label={label}
      path={path}
      value={getIn(def, path)}
      problems={problems}
      disabled={disabled || (path === 'id' && !isNew)}
      onChange={(v) => set(path, v)}
      {...(hint ? { hint } : {})}
      {...(placeholder ? { placeholder } : {})}
    />
  );
  const num = (label: string, path: string, hint?: string) => (
    <NumberField
      label={label}
      path={path}
      value={getIn(def, path)}
      problems={problems}
      disabled={disabled}
      onChange={(v) => set(path, v)}
      {...(hint ? { hint } : {})}
    />
  );
  const retryOn = getIn(def, 'retry.retryOn');
  return (
    <div class="form">
      <fieldset>
        <legend>Action</legend>
        <div class="grid">
          {text('Id', 'id', 'Letters, digits, _ and -; journeys name the action by it.')}
          {text('Name', 'name')}
        </div>
        {text('Description', 'description')}
      </fieldset>
      <fieldset>
        <legend>Endpoint</legend>
        <div class="grid">
          <SelectField
            label="Method"
            path="endpoint.method"
            value={getIn(def, 'endpoint.method')}
            options={['GET', 'POST', 'PUT', 'PATCH', 'DELETE']}
            problems={problems}
            disabled={disabled}
            onChange={(v) => set('endpoint.method', v)}
          />
          {text('URL', 'endpoint.url', 'The static part: http or https, no placeholders.', 'https://api.example.com/v1')}
          {text('Path', 'endpoint.path', 'Templated; each substituted value is URL-encoded.', '/messages/{{params.id}}')}
          {num('Timeout (ms)', 'endpoint.timeoutMs', 'Default 10000, at most 120000.')}
        </div>
        <KeyValueRows
          legend="Query parameters"
          path="endpoint.query"
          record={getIn(def, 'endpoint.query') as Record<string, string> | undefined}
          problems={problems}
          disabled={disabled}
          onChange={(v) => set('endpoint.query', v)}
        />
        <KeyValueRows
          legend="Headers"
          path="endpoint.headers"
          record={getIn(def, 'endpoint.headers') as Record<string, string> | undefined}
          problems={problems}
          disabled={disabled}
          onChange={(v) => set('endpoint.headers', v)}
        />
      </fieldset>
      <AuthFields def={def} set={set} problems={problems} disabled={disabled} />
      <ParameterRows
        path="parameters"
        record={getIn(def, 'parameters') as Record<string, { type?: string }> | undefined}
        problems={problems}
        disabled={disabled}
        onChange={(v) => set('parameters', v)}
      />
      <fieldset>
        <legend>Body</legend>
        <JsonField
          label="Body template (JSON)"
          path="body"
          value={getIn(def, 'body')}
          problems={problems}
          disabled={disabled}
          rows={8}
          hint='A string that is exactly one placeholder ("{{params.amount}}") keeps the value’s type.'
          onChange={(v) => set('body', v)}
        />
        <CheckboxField
          label="Send a missing optional parameter as null (otherwise its key is left out)"
          path="allowNulls"
          value={getIn(def, 'allowNulls')}
          problems={problems}
          disabled={disabled}
          onChange={(v) => set('allowNulls', v ? true : undefined)}
        />
      </fieldset>
      <CaptureRows
        legend="Response fields"
        path="response.fields"
        record={getIn(def, 'response.fields') as Record<string, { type?: string }> | undefined}
        problems={problems}
        disabled={disabled}
        onChange={(v) => set('response', v ? { fields: v } : undefined)}
      />
      <CaptureRows
        legend="Error response fields"
        path="errorResponse.fields"
        record={getIn(def, 'errorResponse.fields') as Record<string, { type?: string }> | undefined}
        problems={problems}
        disabled={disabled}
        onChange={(v) => set('errorResponse', v ? { fields: v } : undefined)}
      />
      <fieldset>
        <legend>Retry</legend>
        <div class="grid">
          {num('Max attempts', 'retry.maxAttempts', 'Total attempts, the first included (default 4).')}
          <SelectField
            label="Backoff"
            path="retry.backoff.type"
            value={getIn(def, 'retry.backoff.type')}
            options={['exponential', 'fixed']}
            empty="default (exponential)"
            problems={problems}
            disabled={disabled}
            onChange={(v) => set('retry.backoff.type', v)}
          />
          {num('Backoff delay (ms)', 'retry.backoff.delayMs')}
          {num('Longest delay (ms)', 'retry.backoff.maxDelayMs')}
          <TextField
            label="Retry on statuses"
            path="retry.retryOn"
            value={Array.isArray(retryOn) ? retryOn.join(', ') : retryOn}
            hint="Comma list; empty means the default (408, 425, 429, 500, 502, 503, 504)."
            problems={problems}
            disabled={disabled}
            onChange={(v) =>
              set(
                'retry.retryOn',
                v === undefined
                  ? undefined
                  : v
                      .split(',')
                      .map((s) => s.trim())
                      .filter(Boolean)
                      .map((s) => (/^\d+$/.test(s) ? Number(s) : s)),
              )
            }
          />
        </div>
      </fieldset>
      <fieldset>
        <legend>Rate limit</legend>
        <p class="hint">Leave every box empty for no rate limit. Actions with one key share one budget.</p>
        <div class="grid">
          {text('Key', 'rateLimit.key', 'Default: the endpoint’s host:port.')}
          {num('Requests', 'rateLimit.max')}
          {num('Per (ms)', 'rateLimit.perMs')}
          {num('Most in flight', 'rateLimit.maxConcurrent')}
          {num('Longest wait (ms)', 'rateLimit.maxWaitMs', 'A job that would wait longer is dead-lettered (capped).')}
        </div>
      </fieldset>
      <p class="hint">Circuit breaker, signing and mTLS settings are edited in the YAML or JSON tab.</p>
    </div>
  );
}

/** What a save said, carried over the remount when a new action gets its own address. */
let savedNotice: string | null = null;

/** Create or change an action; preview and test the saved version. */
export function ActionEditor({ id, canEdit }: { id: string | null; canEdit: boolean }) {
  const [def, setDef] = useState<Definition>(blankDefinition);
  const [stored, setStored] = useState<StoredAction | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [tab, setTab] = useState<Tab>('form');
  const [saveState, setSaveState] = useState<{ kind: 'idle' | 'saving' | 'saved' | 'error'; text?: string }>(() => {
    const text = savedNotice;
    savedNotice = null;
    return text ? { kind: 'saved', text } : { kind: 'idle' };
  });
  const [touched, setTouched] = useState(false);
  const { problems, checking, setProblems } = useValidation(def, id !== null || touched);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const isNew = id === null;

  const remove = async () => {
    setConfirmDelete(false);
    try {
      await api('DELETE', `/v1/actions/${encodeURIComponent(id ?? '')}`);
      window.location.hash = '#/actions';
    } catch (err) {
      setSaveState({ kind: 'error', text: `Not deleted: ${errorText(err)}` });
    }
  };

  useEffect(() => {
    if (id === null) {
      setDef(blankDefinition());
      setStored(null);
      return;
    }
    api<StoredAction>('GET', `/v1/actions/${encodeURIComponent(id)}`).then(
      (s) => {
        setStored(s);
        setDef(asDefinition(s.definition));
      },
      (err: unknown) => setLoadError(errorText(err)),
    );
  }, [id]);

  const set = (path: string, v: unknown) => {
    setTouched(true);
    setDef((d) => setIn(d, path, v));
    if (saveState.kind !== 'idle') setSaveState({ kind: 'idle' });
  };
  const dirty = stored === null || JSON.stringify(stored.definition) !== JSON.stringify(def);

  const save = async (e: Event) => {
    e.preventDefault();
    const actionId = typeof def.id === 'string' ? def.id : '';
    if (!actionId) {
      setProblems([{ path: 'id', message: 'give the action an id' }]);
      document.getElementById(fieldId('id'))?.focus();
      return;
    }
    setSaveState({ kind: 'saving' });
    try {
      const r = await api<{ id: string; version: number }>('PUT', `/v1/actions/${encodeURIComponent(actionId)}`, def);
      const fresh = await api<StoredAction>('GET', `/v1/actions/${encodeURIComponent(r.id)}`);
      setStored(fresh);
      setDef(asDefinition(fresh.definition));
      setSaveState({ kind: 'saved', text: `Saved as version ${r.version}.` });
      if (isNew) {
        savedNotice = `Saved as version ${r.version}.`;
        window.location.hash = `#/actions/${encodeURIComponent(r.id)}`;
      }
    } catch (err) {
      if (err instanceof ApiError && err.problems.length > 0) setProblems(err.problems);
      setSaveState({ kind: 'error', text: errorText(err) });
    }
  };

  if (loadError) return <p role="alert">{`Could not load action ${id}: ${loadError}`}</p>;
  const readOnly = !canEdit;
  const onTabKey = (e: KeyboardEvent, i: number) => {
    const move = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
    if (!move) return;
    const next = TABS[(i + move + TABS.length) % TABS.length] as (typeof TABS)[number];
    setTab(next.id);
    document.getElementById(`tab-${next.id}`)?.focus();
  };

  return (
    <section aria-labelledby="editor-title">
      <form onSubmit={save} noValidate>
        <div class="toolbar sticky">
          <h1 id="editor-title">{isNew ? 'New action' : `Action ${id}`}</h1>
          {stored && <span class="muted">{`version ${stored.version}`}</span>}
          {stored && <a href={`#/dead-letters?actionId=${encodeURIComponent(stored.id)}`}>Its dead letters</a>}
          <span class="status" role="status" aria-live="polite">
            {id === null && !touched
              ? 'Not checked yet'
              : checking
                ? 'Checking…'
                : problems.length > 0
                  ? `${problems.length} problem${problems.length > 1 ? 's' : ''}`
                  : 'Valid'}
            {dirty && !isNew ? ' · unsaved changes' : ''}
            {saveState.text ? ` · ${saveState.text}` : ''}
          </span>
          <button type="submit" class="primary" disabled={readOnly || saveState.kind === 'saving'}>
            {saveState.kind === 'saving' ? 'Saving…' : 'Save'}
          </button>
          {stored && (
            <button type="button" class="danger" disabled={readOnly} onClick={() => setConfirmDelete(true)}>
              Delete
            </button>
          )}
        </div>
        {readOnly && (
          <p class="notice" role="note">
            Your token can read actions but not change them (that needs the admin scope).
          </p>
        )}
        {problems.length > 0 && (
          <div class="summary" role="region" aria-label="Problems">
            <h2>Problems</h2>
            <ul>
              {problems.map((p, i) => (
                <li key={i}>
                  <a
                    href={`#${fieldId(p.path)}`}
                    onClick={(e) => {
                      e.preventDefault();
                      setTab('form');
                      setTimeout(() => document.getElementById(fieldId(p.path))?.focus(), 0);
                    }}
                  >
                    <code>{p.path || '(definition)'}</code>
                  </a>
                  {`: ${p.message}`}
                </li>
              ))}
            </ul>
          </div>
        )}
        <div role="tablist" aria-label="Edit as" class="tabs">
          {TABS.map((t, i) => (
            <button
              type="button"
              role="tab"
              id={`tab-${t.id}`}
              key={t.id}
              aria-selected={tab === t.id}
              aria-controls={`panel-${t.id}`}
              tabIndex={tab === t.id ? 0 : -1}
              onClick={() => setTab(t.id)}
              onKeyDown={(e) => onTabKey(e, i)}
            >
              {t.label}
            </button>
          ))}
        </div>
        <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`}>
          {tab === 'form' ? (
            <FormTab def={def} set={set} problems={problems} disabled={readOnly} isNew={isNew} />
          ) : (
            <TextTab
              key={tab}
              def={def}
              format={tab}
              disabled={readOnly}
              onChange={(d) => {
                setTouched(true);
                setDef(d);
              }}
            />
          )}
        </div>
      </form>
      {confirmDelete && (
        <Confirm
          title={`Delete action ${id}?`}
          body={<p>Jobs of this action that are still waiting will be dead-lettered (unknown_action) when they run.</p>}
          confirm="Delete"
          danger
          onConfirm={() => void remove()}
          onCancel={() => setConfirmDelete(false)}
        />
      )}
      {stored ? (
        <TryPanel id={stored.id} definition={stored.definition} version={stored.version} dirty={dirty} />
      ) : (
        <p class="hint">Save the action to preview and test it.</p>
      )}
    </section>
  );
}
