export * from './errors.js';
export * from './port-ranges.js';
export * from './sni.js';
export * from './spec.js';
export * from './types.js';
export * from './validate.js';
