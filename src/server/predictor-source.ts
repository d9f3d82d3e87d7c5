/**
 * Finds the predictor: FramePack by default, or any module given with --predictor (a path or a package
 * name) whose default export is `(options) => Predictor`.
 *
 * FramePack's schema comes from src/framepack/inputs.ts, which imports no model code: the server answers
 * `/openapi.json` at once and the model module is only imported during setup (an import failure is then a
 * SETUP_FAILED with the error in `setup.logs`, not a crash). Other predictors reveal their schema when
 * loaded, at setup.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { appError } from '../errors.js';
import { inputSchema as framepackInputs } from '../framepack/inputs.js';
import type { Predictor, PredictorFactory, PredictorOptions } from '../predictor.js';
import type { PredictorSource } from './runner.js';

async function loadModule(specifier: string, name: string, options: PredictorOptions): Promise<Predictor> {
  const mod = (await import(specifier)) as { default?: unknown };
  if (typeof mod.default !== 'function') throw appError('PREDICTOR_INVALID', { module: name });
  const predictor = (mod.default as PredictorFactory)(options);
  if (!predictor || typeof predictor.predict !== 'function' || typeof predictor.setup !== 'function' || !predictor.inputSchema) {
    throw appError('PREDICTOR_INVALID', { module: name });
  }
  return predictor;
}

export function predictorSource(module: string | undefined, options: PredictorOptions): PredictorSource {
  if (module === undefined) {
    const url = new URL('../framepack/predictor.js', import.meta.url).href;
    return { name: 'framepack', schema: framepackInputs, load: (overrides) => loadModule(url, 'framepack', { ...options, ...overrides }) };
  }
  const path = resolve(module);
  const specifier = existsSync(path) ? pathToFileURL(path).href : module;
  return { name: module, load: (overrides) => loadModule(specifier, module, { ...options, ...overrides }) };
}
