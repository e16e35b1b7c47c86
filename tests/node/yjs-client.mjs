// Yjs's own client joins a room, edits its Text concurrently with the others and sets
// its presence. Once it holds its own edits and the "python" peer's (both say so with a
// "done" entry in the Map) and sees that peer's presence, it prints what it sees as one
// JSON line, then stays connected until it is terminated.
//
// usage: node yjs-client.mjs <server url> <room> <edits> <seed>
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [serverUrl, room, edits, seed] = process.argv.slice(2)

// A small seeded generator, so that a failing run can be replayed.
let state = Number(seed) >>> 0
const random = () => {
  state = (state * 1664525 + 1013904223) >>> 0
  return state / 2 ** 32
}

const doc = new Y.Doc()
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true
})
const text = doc.getText('text')
const done = doc.getMap('done')
provider.awareness.setLocalState({ user: 'yjs' })

const presentUsers = () =>
  [...provider.awareness.getStates().values()].map((s) => s.user).filter(Boolean).sort()

let reported = false
const report = () => {
  if (reported || !done.get('yjs') || !done.get('python') || !presentUsers().includes('python')) {
    return
  }
  reported = true
  process.stdout.write(JSON.stringify({ text: text.toString(), users: presentUsers() }) + '\n')
}
doc.on('update', report)
provider.awareness.on('change', report)

let started = false
provider.on('sync', async (synced) => {
  if (!synced || started) return
  started = true
  for (let i = 0; i < Number(edits); i++) {
    const length = text.length
    if (length > 0 && random() < 0.25) {
      const index = Math.floor(random() * length)
      text.delete(index, Math.min(length - index, 1 + Math.floor(random() * 3)))
    } else {
      text.insert(Math.floor(random() * (length + 1)), `<y${i}>`)
    }
    // Let messages from the others arrive in between.
    await new Promise((resolve) => setTimeout(resolve, 0))
  }
  done.set('yjs', true)
})

process.on('SIGTERM', () => {
  provider.destroy()
  process.exit(0)
})
