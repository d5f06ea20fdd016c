// Two stock y-socket.io SocketIOProvider clients edit one Y.Text concurrently.
//
//   node yjs_clients.mjs <url> [--doc notes] [--field content] [--token T] [--edits 10]
//                              [--expect tok,tok] [--absent tok,tok] [--timeout 20000]
//                              [--pause-ms 15] [--transports websocket|polling|polling,websocket]
//
// Client A inserts [A0]..[A<n-1>], client B [B0]..; each token lands at a random token
// boundary (never inside another token) after a random 0-<pause-ms> ms pause, then each
// client deletes its own token 0. --expect / --absent name tokens other writers add /
// delete. The script waits until both documents hold exactly what is expected and are
// identical, then prints one JSON line: {"ok", "text", "a", "b", "clientIds"}.
// Progress goes to stdout as JSON lines too ({"event": "synced"}), so the driver can
// read everything from one stream. Exit code 0 = converged, 1 = timed out / failed.
import * as Y from 'yjs'
import { SocketIOProvider } from 'y-socket.io'

const argv = process.argv.slice(2)
const url = argv[0]
const opt = (name, fallback) => {
  const i = argv.indexOf('--' + name)
  return i >= 0 ? argv[i + 1] : fallback
}
const list = (value) => (value ? value.split(',').filter(Boolean) : [])
if (!url || url.startsWith('--')) {
  console.error('usage: node yjs_clients.mjs <url> [--doc d] [--field f] [--token t] [--edits n]')
  process.exit(2)
}
const docName = opt('doc', 'notes')
const field = opt('field', 'content')
const token = opt('token', undefined)
const edits = parseInt(opt('edits', '10'))
const timeoutMs = parseInt(opt('timeout', '20000'))
const expectOthers = list(opt('expect', ''))
const absentOthers = list(opt('absent', ''))
const pauseMs = parseInt(opt('pause-ms', '15'))
// The provider's default is WebSocket only; 'polling' shows long-polling works too.
const transports = list(opt('transports', 'websocket'))

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Tokens carry an astral character: Yjs counts it as 2 UTF-16 units, pycrdt as 4
// UTF-8 bytes, the hub as 1 Python character -- all three must agree on the result.
const tokenOf = (who, i) => `[${who}${i}\u{1F600}]`

function makeClient (who) {
  const doc = new Y.Doc()
  const provider = new SocketIOProvider(url, docName, doc, {
    autoConnect: true,
    disableBc: true,
    auth: token ? { token } : {}
  }, { transports })
  const synced = new Promise((resolve, reject) => {
    if (provider.synced) return resolve()
    provider.on('synced', (state) => { if (state) resolve() })
    provider.on('connection-error', (error) => reject(new Error(`${who}: ${error.message}`)))
  })
  provider.socket.on('error', (payload) => emit({ event: 'server-error', who, payload }))
  return { who, doc, provider, synced, text: doc.getText(field) }
}

function boundaries (text) {
  // Index 0, and just after every closing bracket: positions no token spans.
  const s = text.toString()
  const positions = [0]
  for (let i = 0; i < s.length; i++) if (s[i] === ']') positions.push(i + 1)
  return positions
}

async function typeTokens (client) {
  for (let i = 0; i < edits; i++) {
    await sleep(Math.random() * pauseMs)
    const positions = boundaries(client.text)
    const at = positions[Math.floor(Math.random() * positions.length)]
    client.text.insert(at, tokenOf(client.who, i))
  }
  await sleep(Math.random() * pauseMs)
  const first = tokenOf(client.who, 0)
  const index = client.text.toString().indexOf(first)
  if (index >= 0) client.text.delete(index, first.length)
}

function expectedState (clients) {
  const present = []
  const absent = [...absentOthers]
  for (const c of clients) {
    absent.push(tokenOf(c.who, 0))
    for (let i = 1; i < edits; i++) present.push(tokenOf(c.who, i))
  }
  return { present: present.concat(expectOthers), absent }
}

function converged (clients, expected) {
  const texts = clients.map((c) => c.text.toString())
  if (!texts.every((t) => t === texts[0])) return false
  return expected.present.every((t) => texts[0].includes(t)) &&
    expected.absent.every((t) => !texts[0].includes(t))
}

async function main () {
  const clients = [makeClient('A'), makeClient('B')]
  await Promise.all(clients.map((c) => c.synced))
  emit({
    event: 'synced',
    clientIds: clients.map((c) => c.doc.clientID),
    transports: clients.map((c) => c.provider.socket.io.engine.transport.name)
  })
  await Promise.all(clients.map(typeTokens))
  const expected = expectedState(clients)
  const deadline = Date.now() + timeoutMs
  let ok = false
  while (Date.now() < deadline) {
    if (converged(clients, expected)) { ok = true; break }
    await sleep(20)
  }
  emit({
    event: 'result',
    ok,
    text: clients[0].text.toString(),
    a: clients[0].text.toString(),
    b: clients[1].text.toString(),
    clientIds: clients.map((c) => c.doc.clientID),
    expected
  })
  for (const c of clients) c.provider.destroy()
  // Let the disconnect packets leave (a long-polling client sends them in a POST),
  // so the server does not wait for a ping timeout to notice we are gone.
  await sleep(300)
  process.exit(ok ? 0 : 1)
}

main().catch((error) => {
  emit({ event: 'result', ok: false, error: String(error && error.stack ? error.stack : error) })
  process.exit(1)
})
