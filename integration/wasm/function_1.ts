// Layotto's FaaS demo, function 1 (id "id_1"), in AssemblyScript: reads
// `name` from the request body (a query string), asks function "id_2" for
// its stock, answers "There are <stock> inventories for <name>.".
import { CALL_DATA, HTTP_REQUEST_BODY, HTTP_RESPONSE_BODY, getBuffer, invokeService, setBuffer } from "./proxy";
export * from "./common";

export function proxy_get_id(): void {
  setBuffer(CALL_DATA, "id_1");
}

function bookName(body: string): string | null {
  const parts = body.split("&");
  for (let i = 0; i < parts.length; i++) {
    if (parts[i].startsWith("name=")) return parts[i].slice(5);
  }
  return null;
}

export function proxy_on_request_body(context: u32, length: u32, endOfStream: u32): u32 {
  const name = bookName(getBuffer(HTTP_REQUEST_BODY, length));
  if (name === null) {
    setBuffer(HTTP_RESPONSE_BODY, "Param 'name' not found\n");
    return 0;
  }
  const stock = invokeService("id_2", "", name);
  setBuffer(HTTP_RESPONSE_BODY, "There are " + (stock === null ? "?" : stock) + " inventories for " + name + ".\n");
  return 0;
}
