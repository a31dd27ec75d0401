// The few pieces of Layotto's proxy-wasm ABI the demo functions use,
// declared by hand (no SDK): host imports, the ABI version, the allocator
// and the callbacks a function must export.

@external("env", "proxy_get_buffer_bytes")
declare function proxy_get_buffer_bytes(kind: u32, start: u32, max: u32, retPtr: usize, retLen: usize): u32;
@external("env", "proxy_set_buffer_bytes")
declare function proxy_set_buffer_bytes(kind: u32, start: u32, size: u32, ptr: usize, len: usize): u32;
@external("env", "proxy_invoke_service")
declare function proxy_invoke_service(
  idPtr: usize, idLen: usize, methodPtr: usize, methodLen: usize,
  paramPtr: usize, paramLen: usize, retPtr: usize, retLen: usize): u32;
@external("env", "proxy_get_state")
declare function proxy_get_state(
  storePtr: usize, storeLen: usize, keyPtr: usize, keyLen: usize, retPtr: usize, retLen: usize): u32;

export const HTTP_REQUEST_BODY: u32 = 0;
export const HTTP_RESPONSE_BODY: u32 = 1;
export const CALL_DATA: u32 = 8;

// Where the host writes the pointer and the length of what it hands over.
const answer = memory.data(8);

// Copies out what the host handed over and frees its buffer (the host
// allocates it through our `malloc`).
function taken(): string {
  const at = load<u32>(answer);
  const text = String.UTF8.decodeUnsafe(at, load<u32>(answer + 4));
  heap.free(at);
  return text;
}

export function setBuffer(kind: u32, text: string): void {
  const bytes = String.UTF8.encode(text);
  proxy_set_buffer_bytes(kind, 0, 0, changetype<usize>(bytes), bytes.byteLength);
}

export function getBuffer(kind: u32, length: u32): string {
  if (proxy_get_buffer_bytes(kind, 0, length, answer, answer + 4) != 0) return "";
  return taken();
}

export function invokeService(id: string, method: string, param: string): string | null {
  const i = String.UTF8.encode(id);
  const m = String.UTF8.encode(method);
  const p = String.UTF8.encode(param);
  const status = proxy_invoke_service(
    changetype<usize>(i), i.byteLength, changetype<usize>(m), m.byteLength,
    changetype<usize>(p), p.byteLength, answer, answer + 4);
  return status == 0 ? taken() : null;
}

export function getState(store: string, key: string): string | null {
  const s = String.UTF8.encode(store);
  const k = String.UTF8.encode(key);
  const status = proxy_get_state(
    changetype<usize>(s), s.byteLength, changetype<usize>(k), k.byteLength, answer, answer + 4);
  return status == 0 ? taken() : null;
}
