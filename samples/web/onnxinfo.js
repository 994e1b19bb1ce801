// Reads the top-level fields of an ONNX ModelProto that the page needs, without a protobuf
// library: ir_version (field 1), the graph (7) and metadata_props (14, key/value strings).
// Used to tell a user at once that a chosen file is not an ONNX model, and to read the input
// description that `squeeze export` records in the model's metadata.

const utf8 = new TextDecoder('utf-8', { fatal: false });

function reader(bytes) {
  let pos = 0;
  const varint = () => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= bytes.length) throw new Error('it ends in the middle of a field');
      const b = bytes[pos++];
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    throw new Error('it holds a malformed number');
  };
  const skip = (n) => {
    if (n < 0 || pos + n > bytes.length) throw new Error('a field runs past the end of the file');
    const start = pos;
    pos += n;
    return bytes.subarray(start, pos);
  };
  const fields = function* () {
    while (pos < bytes.length) {
      const tag = varint();
      const field = Math.floor(tag / 8);
      const wire = tag % 8;
      if (field === 0) throw new Error('it holds a field numbered 0');
      if (wire === 0) yield [field, varint()];
      else if (wire === 1) yield [field, skip(8)];
      else if (wire === 2) yield [field, skip(varint())];
      else if (wire === 5) yield [field, skip(4)];
      else throw new Error(`it holds a field of unknown wire type ${wire}`);
    }
  };
  return { fields };
}

/**
 * The ONNX header of `bytes`.
 * @param {Uint8Array} bytes the whole file
 * @returns {{irVersion: number, metadata: Object<string, string>}}
 * @throws {Error} whose message says why the bytes are not an ONNX model
 */
export function readOnnxHeader(bytes) {
  if (bytes.length === 0) throw new Error('the file is empty');
  let irVersion = 0;
  let hasGraph = false;
  const metadata = {};
  for (const [field, value] of reader(bytes).fields()) {
    if (field === 1 && typeof value === 'number') irVersion = value;
    else if (field === 7 && value instanceof Uint8Array) hasGraph = true;
    else if (field === 14 && value instanceof Uint8Array) {
      let key = '';
      let text = '';
      for (const [f, v] of reader(value).fields()) {
        if (f === 1 && v instanceof Uint8Array) key = utf8.decode(v);
        if (f === 2 && v instanceof Uint8Array) text = utf8.decode(v);
      }
      metadata[key] = text;
    }
  }
  if (!irVersion || irVersion > 100) throw new Error('it has no valid ir_version field');
  if (!hasGraph) throw new Error('it has no graph');
  return { irVersion, metadata };
}
