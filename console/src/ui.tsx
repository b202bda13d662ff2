import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { FieldProblem } from './api.js';
import { fieldId, problemsAt } from './form-model.js';

/** The problem text of one field, tied to its control by aria-describedby. */
export function Problems({ path, problems }: { path: string; problems: FieldProblem[] }) {
  const mine = problemsAt(problems, path);
  if (mine.length === 0) return null;
  return (
    <p class="problem" id={`${fieldId(path)}-problem`} role="alert">
      {mine.map((p) => p.message).join('; ')}
    </p>
  );
}

interface ControlProps {
  label: string;
  path: string;
  problems: FieldProblem[];
  hint?: string;
  disabled?: boolean;
}

const described = (path: string, problems: FieldProblem[], hint?: string) => {
  const ids = [hint ? `${fieldId(path)}-hint` : '', problemsAt(problems, path).length > 0 ? `${fieldId(path)}-problem` : '']
    .filter(Boolean)
    .join(' ');
  return { 'aria-describedby': ids || undefined, 'aria-invalid': problemsAt(problems, path).length > 0 ? true : undefined };
};

function Wrap({ label, path, problems, hint, children }: ControlProps & { children: ComponentChildren }) {
  return (
    <div class={`field${problemsAt(problems, path).length > 0 ? ' invalid' : ''}`}>
      <label for={fieldId(path)}>{label}</label>
      {children}
      {hint && (
        <p class="hint" id={`${fieldId(path)}-hint`}>
          {hint}
        </p>
      )}
      <Problems path={path} problems={problems} />
    </div>
  );
}

export function TextField(
  props: ControlProps & { value: unknown; onChange: (v: string | undefined) => void; type?: string; placeholder?: string },
) {
  return (
    <Wrap {...props}>
      <input
        id={fieldId(props.path)}
        type={(props.type ?? 'text') as 'text'}
        value={props.value === undefined || props.value === null ? '' : String(props.value)}
        placeholder={props.placeholder}
        disabled={props.disabled}
        onInput={(e) => {
          const v = (e.currentTarget as HTMLInputElement).value;
          props.onChange(v === '' ? undefined : v);
        }}
        {...described(props.path, props.problems, props.hint)}
      />
    </Wrap>
  );
}

/** A number; an empty box removes the key (the server's default applies). Text that is not a number is sent as is, for the server to name. */
export function NumberField(props: ControlProps & { value: unknown; onChange: (v: number | string | undefined) => void }) {
  return (
    <Wrap {...props}>
      <input
        id={fieldId(props.path)}
        type="text"
        inputMode="numeric"
        value={props.value === undefined ? '' : String(props.value)}
        disabled={props.disabled}
        onInput={(e) => {
          const v = (e.currentTarget as HTMLInputElement).value.trim();
          props.onChange(v === '' ? undefined : Number.isFinite(Number(v)) ? Number(v) : v);
        }}
        {...described(props.path, props.problems, props.hint)}
      />
    </Wrap>
  );
}

export function SelectField(
  props: ControlProps & { value: unknown; options: readonly string[]; onChange: (v: string | undefined) => void; empty?: string },
) {
  return (
    <Wrap {...props}>
      <select
        id={fieldId(props.path)}
        value={props.value === undefined ? '' : String(props.value)}
        disabled={props.disabled}
        onChange={(e) => {
          const v = (e.currentTarget as HTMLSelectElement).value;
          props.onChange(v === '' ? undefined : v);
        }}
        {...described(props.path, props.problems, props.hint)}
      >
        {props.empty !== undefined && <option value="">{props.empty}</option>}
        {props.options.map((o) => (
          <option value={o} key={o}>
            {o}
          </option>
        ))}
      </select>
    </Wrap>
  );
}

export function CheckboxField(props: ControlProps & { value: unknown; onChange: (v: boolean) => void }) {
  return (
    <div class={`field checkbox${problemsAt(props.problems, props.path).length > 0 ? ' invalid' : ''}`}>
      <input
        id={fieldId(props.path)}
        type="checkbox"
        checked={props.value === true}
        disabled={props.disabled}
        onChange={(e) => props.onChange((e.currentTarget as HTMLInputElement).checked)}
        {...described(props.path, props.problems, props.hint)}
      />
      <label for={fieldId(props.path)}>{props.label}</label>
      <Problems path={props.path} problems={props.problems} />
    </div>
  );
}

/**
 * A JSON value edited as text. Text that does not parse stays in the box with its error and is
 * not sent; the last value that parsed stays in the definition.
 */
export function JsonField(props: ControlProps & { value: unknown; onChange: (v: unknown) => void; rows?: number }) {
  const shown = props.value === undefined ? '' : JSON.stringify(props.value, null, 2);
  const [text, setText] = useState(shown);
  const [error, setError] = useState<string | null>(null);
  const last = useRef(shown);
  // Changed elsewhere (the YAML/JSON tab): show the new value.
  useEffect(() => {
    if (shown !== last.current) {
      last.current = shown;
      setText(shown);
      setError(null);
    }
  }, [shown]);
  const parseProblems = error ? [{ path: props.path, message: error }] : [];
  return (
    <Wrap {...props} problems={[...parseProblems, ...props.problems]}>
      <textarea
        id={fieldId(props.path)}
        class="code"
        rows={props.rows ?? 6}
        value={text}
        disabled={props.disabled}
        spellcheck={false}
        onInput={(e) => {
          const t = (e.currentTarget as HTMLTextAreaElement).value;
          setText(t);
          if (t.trim() === '') {
            setError(null);
            last.current = '';
            props.onChange(undefined);
            return;
          }
          try {
            const v = JSON.parse(t) as unknown;
            setError(null);
            last.current = JSON.stringify(v, null, 2);
            props.onChange(v);
          } catch (err) {
            setError(`not JSON: ${(err as Error).message}`);
          }
        }}
        {...described(props.path, [...parseProblems, ...props.problems], props.hint)}
      />
    </Wrap>
  );
}

/** Modal confirmation on the platform's <dialog>: focus is trapped, Escape cancels. */
export function Confirm(props: {
  title: string;
  body: ComponentChildren;
  confirm: string;
  onConfirm: () => void;
  onCancel: () => void;
  danger?: boolean;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
  }, []);
  return (
    <dialog ref={ref} aria-labelledby="confirm-title" onCancel={props.onCancel} class="confirm">
      <h2 id="confirm-title">{props.title}</h2>
      <div>{props.body}</div>
      <div class="buttons">
        <button type="button" class={props.danger ? 'danger' : 'primary'} onClick={props.onConfirm}>
          {props.confirm}
        </button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </dialog>
  );
}

export const fmtJson = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v, null, 2));
