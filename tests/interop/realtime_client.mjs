// A stock socket.io-client subscribing to record events on the hub's /realtime namespace.
//
//   node realtime_client.mjs <url> --token T --subscribe '<json>' [--events 3]
//                            [--timeout 30000] [--transports polling,websocket]
//
// Connects to <url>/realtime with handshake auth {token}, emits `subscribe` with the
// given payload and an ack, then prints JSON lines to stdout: {"event": "ack", ack},
// then {"event": "record", payload} for every `event` message, and finally
// {"event": "result", ok} once --events record events arrived (exit 0) or the timeout
// passed (exit 1). `error` messages from the server are printed as {"event":
// "server-error", payload}; a refused connection as {"event": "connect-error", ...}.
import { io } from 'socket.io-client'

const argv = process.argv.slice(2)
const url = argv[0]
const opt = (name, fallback) => {
  const i = argv.indexOf('--' + name)
  return i >= 0 ? argv[i + 1] : fallback
}
if (!url || url.startsWith('--')) {
  console.error("usage: node realtime_client.mjs <url> --token T --subscribe '<json>' [--events n]")
  process.exit(2)
}
const token = opt('token', '')
const subscription = JSON.parse(opt('subscribe', '{}'))
const wanted = parseInt(opt('events', '1'))
const timeoutMs = parseInt(opt('timeout', '30000'))
// socket.io-client's default: long-polling first, then the upgrade to WebSocket.
const transports = opt('transports', 'polling,websocket').split(',').filter(Boolean)

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const socket = io(url + '/realtime', { auth: { token }, transports, reconnection: false })
let received = 0

const finish = (ok) => {
  emit({ event: 'result', ok, received, transport: socket.io.engine?.transport?.name })
  socket.close()
  process.exit(ok ? 0 : 1)
}
setTimeout(() => finish(false), timeoutMs)

socket.on('connect_error', (error) => {
  emit({ event: 'connect-error', message: error.message, data: error.data ?? null })
  finish(false)
})
socket.on('error', (payload) => emit({ event: 'server-error', payload }))
socket.on('event', (payload) => {
  received += 1
  emit({ event: 'record', payload })
  if (received >= wanted) finish(true)
})
socket.on('connect', async () => {
  const ack = await socket.timeout(timeoutMs).emitWithAck('subscribe', subscription)
  emit({ event: 'ack', ack })
  if (!ack.ok) finish(false)
})
