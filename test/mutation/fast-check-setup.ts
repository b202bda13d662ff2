import fc from 'fast-check';

// Under mutation a failing property is a killed mutant: stop at the first counterexample instead
// of shrinking it, which can take longer than the property's own runs.
fc.configureGlobal({ endOnFailure: true });
