// Layotto's FaaS demo, function 2 (id "id_2"), in AssemblyScript: the
// request body is a book's name; the answer is its stock from state store
// "state_demo".
import { CALL_DATA, HTTP_REQUEST_BODY, HTTP_RESPONSE_BODY, getBuffer, getState, setBuffer } from "./proxy";
export * from "./common";

export function proxy_get_id(): void {
  setBuffer(CALL_DATA, "id_2");
}

export function proxy_on_request_body(context: u32, length: u32, endOfStream: u32): u32 {
  const stock = getState("state_demo", getBuffer(HTTP_REQUEST_BODY, length));
  setBuffer(HTTP_RESPONSE_BODY, stock === null || stock.length == 0 ? "no such book" : stock);
  return 0;
}
