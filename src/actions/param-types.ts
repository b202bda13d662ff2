/**
 * The parameter types of an action other than `listObject`. No imports: the console's browser
 * bundle takes it as it is.
 */
export const scalarParamTypes = [
  'string',
  'integer',
  'decimal',
  'boolean',
  'date',
  'dateTime',
  'listString',
  'listInteger',
  'listDecimal',
  'listBoolean',
  'listDateTime',
] as const;
