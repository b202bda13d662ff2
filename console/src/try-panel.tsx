import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, errorText, type DescribedRequest, type TestResult } from './api.js';
import { SAMPLE_CONTEXT, sampleParams } from './form-model.js';
import { fmtJson } from './ui.js';

type Outcome =
  | { kind: 'preview'; request: DescribedRequest }
  | { kind: 'test'; result: TestResult }
  | { kind: 'error'; message: string; status: number; details: unknown }
  | null;

function Headers({ headers, caption }: { headers: Record<string, string | string[]>; caption: string }) {
  return (
    <table class="headers">
      <caption>{caption}</caption>
      <tbody>
        {Object.entries(headers).map(([k, v]) => (
          <tr key={k}>
            <th scope="row">{k}</th>
            <td>{Array.isArray(v) ? v.join(', ') : v}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function RequestView({ request, title }: { request: DescribedRequest; title: string }) {
  return (
    <div class="result">
      <h3>{title}</h3>
      <p>
        <code class="method">{request.method}</code> <code class="wrap">{request.url}</code>
      </p>
      <Headers headers={request.headers} caption="Request headers (credentials masked)" />
      {request.body !== undefined && <pre aria-label="Request body">{fmtJson(request.body)}</pre>}
    </div>
  );
}

/** Sample params and context, the rendered request (POST /v1/actions/:id/preview) and a real one (…/test). */
export function TryPanel({
  id,
  definition,
  version,
  dirty,
}: {
  id: string;
  definition: Record<string, unknown>;
  version: number;
  dirty: boolean;
}) {
  const [params, setParams] = useState('');
  const [context, setContext] = useState('');
  const [outcome, setOutcome] = useState<Outcome>(null);
  const [busy, setBusy] = useState<'preview' | 'test' | null>(null);
  const [inputError, setInputError] = useState<string | null>(null);

  // Pre-filled from the parameter types of the saved version.
  useEffect(() => {
    setParams(JSON.stringify(sampleParams(definition.parameters), null, 2));
    setContext(JSON.stringify(SAMPLE_CONTEXT, null, 2));
    setOutcome(null);
  }, [id, version]);

  const run = async (kind: 'preview' | 'test') => {
    let body: { params: unknown; context: unknown };
    try {
      body = { params: JSON.parse(params || '{}'), context: JSON.parse(context || '{}') };
      setInputError(null);
    } catch (err) {
      setInputError(`Params and context must be JSON: ${errorText(err)}`);
      return;
    }
    setBusy(kind);
    try {
      if (kind === 'preview')
        setOutcome({ kind, request: await api<DescribedRequest>('POST', `/v1/actions/${encodeURIComponent(id)}/preview`, body) });
      else setOutcome({ kind, result: await api<TestResult>('POST', `/v1/actions/${encodeURIComponent(id)}/test`, body) });
    } catch (err) {
      setOutcome({
        kind: 'error',
        message: errorText(err),
        status: err instanceof ApiError ? err.status : 0,
        details: err instanceof ApiError ? err.details : undefined,
      });
    } finally {
      setBusy(null);
    }
  };

  return (
    <section class="try" aria-labelledby="try-title">
      <h2 id="try-title">Preview and test</h2>
      {dirty && <p class="notice">{`These use the saved version ${version}: save your changes first to try them.`}</p>}
      <div class="grid two">
        <div class="field">
          <label for="try-params">Sample params (JSON)</label>
          <textarea
            id="try-params"
            class="code"
            rows={8}
            spellcheck={false}
            value={params}
            onInput={(e) => setParams((e.currentTarget as HTMLTextAreaElement).value)}
          />
        </div>
        <div class="field">
          <label for="try-context">Sample context (JSON)</label>
          <textarea
            id="try-context"
            class="code"
            rows={8}
            spellcheck={false}
            value={context}
            onInput={(e) => setContext((e.currentTarget as HTMLTextAreaElement).value)}
          />
        </div>
      </div>
      {inputError && (
        <p class="problem" role="alert">
          {inputError}
        </p>
      )}
      <div class="buttons">
        <button type="button" onClick={() => void run('preview')} disabled={busy !== null}>
          {busy === 'preview' ? 'Rendering…' : 'Preview request'}
        </button>
        <button type="button" class="primary" onClick={() => void run('test')} disabled={busy !== null}>
          {busy === 'test' ? 'Sending…' : 'Send test request'}
        </button>
      </div>
      <div aria-live="polite" id="try-outcome">
        {outcome?.kind === 'preview' && <RequestView request={outcome.request} title="Request that would be sent (nothing sent)" />}
        {outcome?.kind === 'test' && (
          <div class="result">
            <h3>
              {'Answer: '}
              <span class={`status-code s${String(outcome.result.response.status)[0]}`}>{outcome.result.response.status}</span>
              {` in ${outcome.result.durationMs} ms`}
            </h3>
            <Headers headers={outcome.result.response.headers} caption="Response headers" />
            <pre aria-label="Response body">{fmtJson(outcome.result.response.body)}</pre>
            {outcome.result.response.truncated && <p class="hint">The body was cut at RESPONSE_MAX_BYTES.</p>}
            {outcome.result.response.note && <p class="hint">{outcome.result.response.note}</p>}
            <RequestView request={outcome.result.request} title="Request sent (credentials masked)" />
          </div>
        )}
        {outcome?.kind === 'error' && (
          <div class="result error" role="alert">
            <h3>{outcome.status ? `Failed (${outcome.status})` : 'Failed'}</h3>
            <p>{outcome.message}</p>
            {outcome.details !== undefined && <pre>{fmtJson(outcome.details)}</pre>}
          </div>
        )}
      </div>
    </section>
  );
}
