// A Yjs WebsocketProvider editing a text file's room on a Jupyter server.
// Usage: node jupyter_room_client.mjs <ws url of api/rooms> <path> <token>
// Prints one JSON line per event; inserts "js: " at the start once synced, and
// exits when the text contains "py!" (the Python client's edit).
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";

const [serverUrl, room, token] = process.argv.slice(2);
const doc = new Y.Doc();
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket,
  params: { token },
  disableBc: true,
});
const text = doc.getText("source");
const say = (event) => console.log(JSON.stringify({ ...event, text: text.toString() }));

let edited = false;
provider.on("sync", (synced) => {
  if (!synced || edited) return;
  edited = true;
  say({ event: "synced" });
  text.insert(0, "js: ");
});
text.observe(() => {
  say({ event: "changed" });
  if (text.toString().includes("py!")) {
    setTimeout(() => {
      provider.destroy();
      process.exit(0);
    }, 100);
  }
});
setTimeout(() => {
  say({ event: "timeout" });
  process.exit(2);
}, 20000);
