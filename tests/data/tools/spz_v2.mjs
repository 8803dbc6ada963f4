// Re-save an .spz as SPZ version 2 with the SPZ library splat-transform 3.7.0 bundles (@adobe/spz, Niantic's
// code as WebAssembly). splat-transform's CLI writes only versions 3 and 4.
// Usage: node spz_v2.mjs in.spz out.spz
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire('/usr/lib/node_modules/@playcanvas/splat-transform/package.json');
const { default: createModule } = await import(require.resolve('@adobe/spz'));
const spz = await createModule();
const unspecified = spz.CoordinateSystem.UNSPECIFIED;
const cloud = await spz.loadSpzFromBuffer(readFileSync(process.argv[2]), { to: unspecified });
const bytes = spz.saveSpzToBuffer(cloud, { version: 2, from: unspecified, sh1Bits: 5, shRestBits: 4 });
if (!(bytes[0] === 0x1f && bytes[1] === 0x8b)) throw new Error('the SPZ library did not write a gzip (v2) file');
writeFileSync(process.argv[3], bytes);
