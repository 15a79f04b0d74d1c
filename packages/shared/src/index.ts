export * from './errors.js';
export * from './validate.js';
export * from './types.js';
export * from './spec.js';
