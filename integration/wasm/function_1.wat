;; Layotto's FaaS demo, function 1 (id "id_1"), in WebAssembly text: reads
;; `name` from the request body (a query string: name=book1&...), asks
;; function "id_2" for its stock through proxy_invoke_service, and answers
;; "There are <stock> inventories for <name>.".
(module
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_invoke_service"
    (func $invoke (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "id_1")
  (data (i32.const 16) "id_2")
  (data (i32.const 32) "There are ")
  (data (i32.const 48) " inventories for ")
  (data (i32.const 80) ".\n")
  (data (i32.const 96) "Param 'name' not found\n")
  ;; 240 and 244: where the host writes the pointer and length of an answer.
  (global $heap (mut i32) (i32.const 1024))

  (func (export "proxy_abi_version_0_2_0"))

  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap
      (i32.and (i32.add (i32.add (global.get $heap) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow
        (i32.add (i32.shr_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16))
                 (i32.const 1))))))
    (local.get $at))

  (func (export "proxy_get_id")
    (drop (call $set_buffer (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 4))))

  (func (export "proxy_on_context_create") (param i32 i32)
    (global.set $heap (i32.const 1024)))

  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.const 0))

  (func (export "proxy_on_request_body") (param $ctx i32) (param $len i32) (param $eos i32) (result i32)
    (local $body i32) (local $blen i32) (local $i i32) (local $start i32) (local $end i32)
    (local $nlen i32) (local $answer i32) (local $alen i32) (local $out i32) (local $at i32)
    (drop (call $get_buffer (i32.const 0) (i32.const 0) (local.get $len) (i32.const 240) (i32.const 244)))
    (local.set $body (i32.load (i32.const 240)))
    (local.set $blen (i32.load (i32.const 244)))
    ;; Find "name=" at the start or after '&'.
    (local.set $start (i32.const -1))
    (block $found
      (loop $scan
        (br_if $found (i32.gt_u (i32.add (local.get $i) (i32.const 5)) (local.get $blen)))
        (if (i32.and
              (i32.or (i32.eqz (local.get $i))
                      (i32.eq (i32.load8_u (i32.sub (i32.add (local.get $body) (local.get $i)) (i32.const 1)))
                              (i32.const 38)))
              (i32.and
                (i32.eq (i32.load (i32.add (local.get $body) (local.get $i))) (i32.const 0x656d616e))
                (i32.eq (i32.load8_u (i32.add (i32.add (local.get $body) (local.get $i)) (i32.const 4)))
                        (i32.const 61))))
          (then (local.set $start (i32.add (local.get $i) (i32.const 5))) (br $found)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (if (i32.lt_s (local.get $start) (i32.const 0))
      (then
        (drop (call $log (i32.const 4) (i32.const 96) (i32.const 22)))
        (drop (call $set_buffer (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 96) (i32.const 23)))
        (return (i32.const 0))))
    (local.set $end (local.get $start))
    (block $done
      (loop $value
        (br_if $done (i32.ge_u (local.get $end) (local.get $blen)))
        (br_if $done (i32.eq (i32.load8_u (i32.add (local.get $body) (local.get $end))) (i32.const 38)))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $value)))
    (local.set $nlen (i32.sub (local.get $end) (local.get $start)))
    (local.set $start (i32.add (local.get $body) (local.get $start)))
    ;; Ask function 2.
    (if (i32.eqz (call $invoke (i32.const 16) (i32.const 4) (i32.const 0) (i32.const 0)
                        (local.get $start) (local.get $nlen) (i32.const 240) (i32.const 244)))
      (then
        (local.set $answer (i32.load (i32.const 240)))
        (local.set $alen (i32.load (i32.const 244)))))
    ;; "There are " + answer + " inventories for " + name + ".\n"
    (local.set $out (call $malloc (i32.add (i32.add (local.get $alen) (local.get $nlen)) (i32.const 29))))
    (local.set $at (local.get $out))
    (memory.copy (local.get $at) (i32.const 32) (i32.const 10))
    (local.set $at (i32.add (local.get $at) (i32.const 10)))
    (memory.copy (local.get $at) (local.get $answer) (local.get $alen))
    (local.set $at (i32.add (local.get $at) (local.get $alen)))
    (memory.copy (local.get $at) (i32.const 48) (i32.const 17))
    (local.set $at (i32.add (local.get $at) (i32.const 17)))
    (memory.copy (local.get $at) (local.get $start) (local.get $nlen))
    (local.set $at (i32.add (local.get $at) (local.get $nlen)))
    (memory.copy (local.get $at) (i32.const 80) (i32.const 2))
    (local.set $at (i32.add (local.get $at) (i32.const 2)))
    (drop (call $set_buffer (i32.const 1) (i32.const 0) (i32.const 0)
                (local.get $out) (i32.sub (local.get $at) (local.get $out))))
    (i32.const 0))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))
