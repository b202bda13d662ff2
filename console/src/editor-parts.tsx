import { useEffect, useRef, useState } from 'preact/hooks';
import type { FieldProblem } from './api.js';
import { fieldId, PARAM_TYPES, problemsUnder, SCALAR_TYPES } from './form-model.js';
import { JsonField, Problems, SelectField, TextField } from './ui.js';

interface Row {
  key: string;
  value: string;
}

/**
 * Rows kept in the component while they are edited (a row may have no name yet, or the name of
 * another row for a moment); the record built from them goes to the definition.
 */
function useRows<T>(record: Record<string, T> | undefined, toRow: (k: string, v: T) => Row) {
  const fromRecord = () => Object.entries(record ?? {}).map(([k, v]) => toRow(k, v));
  const [rows, setRows] = useState<Row[]>(fromRecord);
  const sent = useRef(JSON.stringify(record ?? {}));
  useEffect(() => {
    const incoming = JSON.stringify(record ?? {});
    if (incoming !== sent.current) {
      sent.current = incoming;
      setRows(fromRecord());
    }
  }, [record]);
  return { rows, setRows, sent };
}

/** Query parameters or headers: name/value rows. */
export function KeyValueRows(props: {
  legend: string;
  path: string;
  record: Record<string, string> | undefined;
  onChange: (v: Record<string, string> | undefined) => void;
  problems: FieldProblem[];
  disabled?: boolean;
  keyLabel?: string;
}) {
  const { rows, setRows, sent } = useRows(props.record, (key, value) => ({ key, value: String(value) }));
  const update = (next: Row[]) => {
    setRows(next);
    const record: Record<string, string> = {};
    for (const r of next) if (r.key !== '') record[r.key] = r.value;
    sent.current = JSON.stringify(record);
    props.onChange(Object.keys(record).length > 0 ? record : undefined);
  };
  const keyLabel = props.keyLabel ?? 'Name';
  const dupes = new Set(rows.map((r) => r.key).filter((k, i, all) => k !== '' && all.indexOf(k) !== i));
  return (
    <fieldset class="rows">
      <legend>{props.legend}</legend>
      {rows.length === 0 && <p class="hint">None.</p>}
      {rows.map((row, i) => {
        const p = `${props.path}.${row.key || `new${i}`}`;
        return (
          <div class="row" key={i}>
            <label class="sr-only" for={`${fieldId(p)}-key`}>
              {`${props.legend} ${i + 1}: ${keyLabel.toLowerCase()}`}
            </label>
            <input
              id={`${fieldId(p)}-key`}
              placeholder={keyLabel}
              value={row.key}
              disabled={props.disabled}
              onInput={(e) => update(rows.map((r, j) => (j === i ? { ...r, key: (e.currentTarget as HTMLInputElement).value } : r)))}
            />
            <label class="sr-only" for={fieldId(p)}>
              {`${props.legend} ${i + 1}: value`}
            </label>
            <input
              id={fieldId(p)}
              placeholder="Value or {{template}}"
              value={row.value}
              disabled={props.disabled}
              aria-invalid={problemsUnder(props.problems, p).length > 0 ? true : undefined}
              onInput={(e) => update(rows.map((r, j) => (j === i ? { ...r, value: (e.currentTarget as HTMLInputElement).value } : r)))}
            />
            <button
              type="button"
              class="icon"
              disabled={props.disabled}
              aria-label={`Remove ${props.legend.toLowerCase()} ${row.key || i + 1}`}
              onClick={() => update(rows.filter((_, j) => j !== i))}
            >
              ✕
            </button>
            {dupes.has(row.key) && (
              <p class="problem" role="alert">
                {`"${row.key}" is given twice: the last one is kept`}
              </p>
            )}
            <Problems path={p} problems={props.problems} />
          </div>
        );
      })}
      <button type="button" disabled={props.disabled} onClick={() => update([...rows, { key: '', value: '' }])}>
        {`Add ${props.legend.toLowerCase().replace(/s$/, '')}`}
      </button>
      <Problems path={props.path} problems={props.problems} />
    </fieldset>
  );
}

type SecretRef = { env: string } | { file: string };

/** A secret is entered as a reference (an environment variable or a file name), never as its value. */
export function SecretRefField(props: {
  label: string;
  path: string;
  value: unknown;
  onChange: (v: SecretRef | undefined) => void;
  problems: FieldProblem[];
  disabled?: boolean;
}) {
  const ref = (props.value ?? {}) as Partial<Record<'env' | 'file', string>>;
  const kind: 'env' | 'file' = ref.file !== undefined ? 'file' : 'env';
  const name = ref[kind] ?? '';
  const set = (k: 'env' | 'file', n: string) => props.onChange(n === '' ? undefined : k === 'env' ? { env: n } : { file: n });
  return (
    <fieldset class="secret">
      <legend>{props.label}</legend>
      <div class="inline">
        <SelectField
          label="Reference kind"
          path={`${props.path}.kind`}
          value={kind}
          options={['env', 'file']}
          problems={[]}
          disabled={props.disabled}
          onChange={(k) => set((k as 'env' | 'file') ?? 'env', name)}
        />
        <TextField
          label={kind === 'env' ? 'Environment variable' : 'File (inside SECRETS_DIR)'}
          path={`${props.path}.${kind}`}
          value={name}
          problems={props.problems}
          disabled={props.disabled}
          placeholder={kind === 'env' ? 'ACTION_SECRET_…' : 'acme/token'}
          hint="The worker reads the value when it sends; the console never sees it."
          onChange={(n) => set(kind, n ?? '')}
        />
      </div>
      <Problems path={props.path} problems={props.problems} />
    </fieldset>
  );
}

interface ParamSpec {
  type?: string;
  required?: boolean;
  description?: string;
  fields?: Record<string, ParamSpec>;
}

/** Parameters: name, type, required; a listObject's fields as JSON. */
export function ParameterRows(props: {
  path: string;
  record: Record<string, ParamSpec> | undefined;
  onChange: (v: Record<string, ParamSpec> | undefined) => void;
  problems: FieldProblem[];
  disabled?: boolean;
}) {
  const [rows, setRows] = useState(() => Object.entries(props.record ?? {}).map(([name, spec]) => ({ name, spec })));
  const sent = useRef(JSON.stringify(props.record ?? {}));
  useEffect(() => {
    const incoming = JSON.stringify(props.record ?? {});
    if (incoming !== sent.current) {
      sent.current = incoming;
      setRows(Object.entries(props.record ?? {}).map(([name, spec]) => ({ name, spec })));
    }
  }, [props.record]);
  const update = (next: { name: string; spec: ParamSpec }[]) => {
    setRows(next);
    const record: Record<string, ParamSpec> = {};
    for (const r of next) if (r.name !== '') record[r.name] = r.spec;
    sent.current = JSON.stringify(record);
    props.onChange(Object.keys(record).length > 0 ? record : undefined);
  };
  const setSpec = (i: number, spec: ParamSpec) => update(rows.map((r, j) => (j === i ? { ...r, spec } : r)));
  return (
    <fieldset class="rows">
      <legend>Parameters</legend>
      <p class="hint">The variable fields each job supplies; templates use them as {'{{params.NAME}}'}.</p>
      {rows.map((row, i) => {
        const p = `${props.path}.${row.name || `new${i}`}`;
        return (
          <div class="param" key={i}>
            <TextField
              label={`Parameter ${i + 1} name`}
              path={`${p}.name`}
              value={row.name}
              problems={props.problems.filter((x) => x.path === p)}
              disabled={props.disabled}
              onChange={(v) => update(rows.map((r, j) => (j === i ? { ...r, name: v ?? '' } : r)))}
            />
            <SelectField
              label="Type"
              path={`${p}.type`}
              value={row.spec.type}
              options={PARAM_TYPES}
              problems={props.problems}
              disabled={props.disabled}
              onChange={(type) => {
                const { fields, ...rest } = row.spec;
                setSpec(
                  i,
                  type === 'listObject'
                    ? { ...rest, type, fields: fields ?? { name: { type: 'string' } } }
                    : { ...rest, type: type ?? 'string' },
                );
              }}
            />
            <div class="field checkbox">
              <input
                id={fieldId(`${p}.required`)}
                type="checkbox"
                checked={row.spec.required === true}
                disabled={props.disabled}
                onChange={(e) => {
                  const { required: _r, ...rest } = row.spec;
                  setSpec(i, (e.currentTarget as HTMLInputElement).checked ? { ...rest, required: true } : rest);
                }}
              />
              <label for={fieldId(`${p}.required`)}>Required</label>
            </div>
            <button
              type="button"
              class="icon"
              disabled={props.disabled}
              aria-label={`Remove parameter ${row.name || i + 1}`}
              onClick={() => update(rows.filter((_, j) => j !== i))}
            >
              ✕
            </button>
            {row.spec.type === 'listObject' && (
              <JsonField
                label="Fields of each object (JSON: name → { type, required })"
                path={`${p}.fields`}
                value={row.spec.fields}
                problems={props.problems}
                rows={4}
                disabled={props.disabled}
                onChange={(fields) => setSpec(i, { ...row.spec, fields: fields as Record<string, ParamSpec> })}
              />
            )}
            <Problems path={p} problems={props.problems} />
          </div>
        );
      })}
      <button type="button" disabled={props.disabled} onClick={() => update([...rows, { name: '', spec: { type: 'string' } }])}>
        Add parameter
      </button>
      <Problems path={props.path} problems={props.problems} />
    </fieldset>
  );
}

interface CaptureSpec {
  type?: string;
  path?: string;
}

/** Response or error-response fields: name, type and the dotted path in the JSON answer. */
export function CaptureRows(props: {
  legend: string;
  path: string;
  record: Record<string, CaptureSpec> | undefined;
  onChange: (v: Record<string, CaptureSpec> | undefined) => void;
  problems: FieldProblem[];
  disabled?: boolean;
}) {
  const [rows, setRows] = useState(() => Object.entries(props.record ?? {}).map(([name, spec]) => ({ name, spec })));
  const sent = useRef(JSON.stringify(props.record ?? {}));
  useEffect(() => {
    const incoming = JSON.stringify(props.record ?? {});
    if (incoming !== sent.current) {
      sent.current = incoming;
      setRows(Object.entries(props.record ?? {}).map(([name, spec]) => ({ name, spec })));
    }
  }, [props.record]);
  const update = (next: { name: string; spec: CaptureSpec }[]) => {
    setRows(next);
    const record: Record<string, CaptureSpec> = {};
    for (const r of next) if (r.name !== '') record[r.name] = r.spec;
    sent.current = JSON.stringify(record);
    props.onChange(Object.keys(record).length > 0 ? record : undefined);
  };
  return (
    <fieldset class="rows">
      <legend>{props.legend}</legend>
      {rows.length === 0 && <p class="hint">None captured.</p>}
      {rows.map((row, i) => {
        const p = `${props.path}.${row.name || `new${i}`}`;
        const set = (spec: CaptureSpec) => update(rows.map((r, j) => (j === i ? { ...r, spec } : r)));
        return (
          <div class="param" key={i}>
            <TextField
              label={`${props.legend}: field ${i + 1} name`}
              path={`${p}.name`}
              value={row.name}
              problems={[]}
              disabled={props.disabled}
              onChange={(v) => update(rows.map((r, j) => (j === i ? { ...r, name: v ?? '' } : r)))}
            />
            <SelectField
              label="Type"
              path={`${p}.type`}
              value={row.spec.type}
              options={SCALAR_TYPES}
              problems={props.problems}
              disabled={props.disabled}
              onChange={(type) => set({ ...row.spec, type: type ?? 'string' })}
            />
            <TextField
              label="Path in the answer"
              path={`${p}.path`}
              value={row.spec.path}
              placeholder={row.name || 'data.id'}
              problems={props.problems}
              disabled={props.disabled}
              onChange={(path) => {
                const { path: _old, ...rest } = row.spec;
                set(path ? { ...rest, path } : rest);
              }}
            />
            <button
              type="button"
              class="icon"
              disabled={props.disabled}
              aria-label={`Remove ${props.legend.toLowerCase()} field ${row.name || i + 1}`}
              onClick={() => update(rows.filter((_, j) => j !== i))}
            >
              ✕
            </button>
            <Problems path={p} problems={props.problems} />
          </div>
        );
      })}
      <button type="button" disabled={props.disabled} onClick={() => update([...rows, { name: '', spec: { type: 'string' } }])}>
        Add field
      </button>
      <Problems path={props.path} problems={props.problems} />
    </fieldset>
  );
}
