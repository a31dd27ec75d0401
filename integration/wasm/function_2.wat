;; Layotto's FaaS demo, function 2 (id "id_2"), in WebAssembly text: the
;; request body is a book's name; the answer is its stock, read from state
;; store "state_demo" through the host call proxy_get_state.
(module
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_state" (func $get_state (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "id_2")
  (data (i32.const 16) "state_demo")
  (data (i32.const 32) "no such book")
  ;; 240 and 244: where the host writes the pointer and length of an answer.
  (global $heap (mut i32) (i32.const 1024))

  (func (export "proxy_abi_version_0_2_0"))

  ;; A bump allocator, reset at each request; the host copies its answers
  ;; into what it returns.
  (func (export "malloc") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap
      (i32.and (i32.add (i32.add (global.get $heap) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow
        (i32.add (i32.shr_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16))
                 (i32.const 1))))))
    (local.get $at))

  ;; Layotto's own export: the function id goes to the call-data buffer (8).
  (func (export "proxy_get_id")
    (drop (call $set_buffer (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 4))))

  (func (export "proxy_on_context_create") (param i32 i32)
    (global.set $heap (i32.const 1024)))

  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.const 0))

  (func (export "proxy_on_request_body") (param $ctx i32) (param $len i32) (param $eos i32) (result i32)
    (drop (call $get_buffer (i32.const 0) (i32.const 0) (local.get $len) (i32.const 240) (i32.const 244)))
    (if (i32.eqz (call $get_state (i32.const 16) (i32.const 10)
                        (i32.load (i32.const 240)) (i32.load (i32.const 244))
                        (i32.const 240) (i32.const 244)))
      (then
        (if (i32.gt_u (i32.load (i32.const 244)) (i32.const 0))
          (then
            (drop (call $set_buffer (i32.const 1) (i32.const 0) (i32.const 0)
                        (i32.load (i32.const 240)) (i32.load (i32.const 244))))
            (return (i32.const 0))))))
    (drop (call $set_buffer (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 32) (i32.const 12)))
    (i32.const 0))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))
