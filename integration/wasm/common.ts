// The exports every function shares: the ABI version, the allocator the
// host returns buffers through, and the callbacks it drives in Layotto's
// order. Each function adds proxy_get_id and proxy_on_request_body.

export function proxy_abi_version_0_2_0(): void {}

// Host buffers live outside the garbage-collected heap; the functions
// free them once copied (proxy.ts).
export function malloc(size: usize): usize {
  return heap.alloc(size);
}

export function proxy_on_context_create(context: u32, root: u32): void {}

export function proxy_on_vm_start(root: u32, size: u32): u32 {
  return 1;
}

export function proxy_on_configure(root: u32, size: u32): u32 {
  return 1;
}

export function proxy_on_request_headers(context: u32, headers: u32, endOfStream: u32): u32 {
  return 0;
}

export function proxy_on_done(context: u32): u32 {
  return 1;
}

export function proxy_on_delete(context: u32): void {}
