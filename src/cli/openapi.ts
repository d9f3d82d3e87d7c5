/**
 * `framepack openapi [--predictor <module>]`: prints the OpenAPI document the server serves. The container
 * build stores it in the `run.cog.openapi_schema` label.
 */
import { openapiDocument } from '../server/openapi.js';
import { predictorSource } from '../server/predictor-source.js';
import { parseArgs, predictorOptionsFrom } from './flags.js';

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const module = args.flags.get('predictor');
  const source = predictorSource(typeof module === 'string' ? module : undefined, predictorOptionsFrom(args, ['predictor']));
  const schema = source.schema ?? (await source.load()).inputSchema;
  process.stdout.write(`${JSON.stringify(openapiDocument(schema))}\n`);
  return 0;
}
