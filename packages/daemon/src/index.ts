export { createApp } from './http/app.js';
export { Conductor } from './conductor.js';
export { readConfig, type Config } from './config/read.js';
