// Writes tests/unit/yjs/fixtures/yjs_updates.json: updates produced by stock yjs that
// cover every struct content kind, each encoded as V1 and as V2, with the text of
// the Y.Text "text" the update should produce. The unit tests check that the hub's
// V1 parser accepts every V1 update, names every V2 one, and that pycrdt reads the
// same text from the V1 bytes.
//
//   cd tests/interop && npm ci --ignore-scripts && node make_yjs_fixtures.mjs
import * as Y from 'yjs'
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, '..', 'unit', 'yjs', 'fixtures', 'yjs_updates.json')

const hex = (u8) => Buffer.from(u8).toString('hex')
const fixtures = []

function add (name, doc, note, extra = {}) {
  fixtures.push({
    name,
    note,
    v1: hex(Y.encodeStateAsUpdate(doc)),
    v2: hex(Y.encodeStateAsUpdateV2(doc)),
    text: doc.getText('text').toString(),
    yrs_decodes: true,
    ...extra
  })
}

function newDoc (clientID, gc = true) {
  const doc = new Y.Doc({ gc })
  doc.clientID = clientID
  return doc
}

{ // ContentString incl. astral characters (clock length in UTF-16 units)
  const d = newDoc(1001)
  d.getText('text').insert(0, 'héllo \u{1F600} wörld')
  add('string', d, 'ContentString, non-ASCII and astral characters')
}
{ // ContentFormat + ContentEmbed
  const d = newDoc(1002)
  const t = d.getText('text')
  t.insert(0, 'bold plain')
  t.format(0, 4, { bold: true })
  t.insertEmbed(4, { image: 'x.png' })
  add('format-embed', d, 'ContentFormat, ContentEmbed')
}
{ // ContentAny with every lib0 "any" tag, ContentBinary, nested ContentType
  const d = newDoc(1003)
  const m = d.getMap('map')
  m.set('any', {
    int: 42, neg: -7, float: 1.5, big: 2 ** 40, str: 's', t: true, f: false, n: null,
    arr: [1, [2, [3, { deep: 'yes' }]]], obj: { a: { b: { c: 1 } } }
  })
  m.set('bytes', new Uint8Array([1, 2, 3]))
  m.set('undef', undefined)
  m.set('bigint', 2n ** 62n)
  const arr = new Y.Array()
  m.set('nested', arr)
  arr.push([new Y.Text('inner'), new Y.Map(), 7])
  d.getText('text').insert(0, 'map doc')
  add('any-binary-types', d, 'ContentAny (all tags), ContentBinary, ContentType')
}
{ // XML types: named type refs (YXmlElement) and YXmlText
  const d = newDoc(1004)
  const frag = d.getXmlFragment('xml')
  const el = new Y.XmlElement('p')
  el.setAttribute('class', 'lead')
  el.insert(0, [new Y.XmlText('para')])
  frag.insert(0, [el])
  d.getText('text').insert(0, 'xml doc')
  add('xml', d, 'ContentType with YXmlElement / YXmlText')
  // Y.XmlHook (deprecated in yjs) is valid V1, but Yrs 0.x cannot decode it: the room
  // must refuse it without touching the document.
  const h = newDoc(1008)
  h.getXmlFragment('xml').insert(0, [new Y.XmlHook('hook')])
  add('xml-hook', h, 'YXmlHook: well-formed V1 that Yrs cannot decode', { yrs_decodes: false })
}
{ // ContentDoc (subdocument)
  const d = newDoc(1005)
  d.getMap('docs').set('sub', new Y.Doc({ guid: 'sub-guid', meta: { kind: 'page' } }))
  d.getText('text').insert(0, 'with subdoc')
  add('subdoc', d, 'ContentDoc with options')
}
{ // Deletions: GC structs (gc on) and ContentDeleted (gc off), plus a delete set
  const d = newDoc(1006)
  d.getText('text').insert(0, 'abcdefgh')
  d.getText('text').delete(2, 3)
  add('deleted-gc', d, 'deleted text, garbage collected into GC structs + delete set')
  const k = newDoc(1007, false)
  k.getText('text').insert(0, 'abcdefgh')
  k.getText('text').delete(2, 3)
  const arr = k.getArray('arr')
  arr.push([{ a: 1 }, 'x'])
  arr.delete(0, 1)
  add('deleted-no-gc', k, 'gc off: ContentDeleted structs')
}
{ // Two clients interleaved, and a merged update with a gap (Skip struct)
  const a = newDoc(2001)
  const b = newDoc(2002)
  a.getText('text').insert(0, 'aaa')
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a))
  b.getText('text').insert(1, 'B')
  Y.applyUpdate(a, Y.encodeStateAsUpdate(b))
  a.getText('text').insert(0, 'Z')
  add('two-clients', a, 'structs of two clients, origins and right origins')

  const c = newDoc(2003)
  const t = c.getText('text')
  t.insert(0, 'one')
  const justOne = Y.encodeStateAsUpdate(c)
  t.insert(3, 'two')
  const sv2 = Y.encodeStateVector(c)
  t.insert(6, 'three')
  const justThree = Y.encodeStateAsUpdate(c, sv2)
  // "one" and "three" without "two" in between: the merge must encode a Skip struct,
  // and a document that applies it holds "three" pending.
  const gap = Y.mergeUpdates([justOne, justThree])
  fixtures.push({
    name: 'merged-with-skip',
    note: 'Y.mergeUpdates of non-adjacent ranges: a Skip struct; "three" stays pending',
    v1: hex(gap),
    v2: hex(Y.mergeUpdatesV2([Y.convertUpdateFormatV1ToV2(justOne), Y.convertUpdateFormatV1ToV2(justThree)])),
    text: 'one',
    yrs_decodes: true
  })
}

mkdirSync(dirname(out), { recursive: true })
writeFileSync(out, JSON.stringify({
  generator: 'tests/interop/make_yjs_fixtures.mjs',
  yjs: JSON.parse(readFileSync(join(here, 'node_modules', 'yjs', 'package.json'))).version,
  fixtures
}, null, 2) + '\n')
console.log(`wrote ${fixtures.length} fixtures to ${out}`)
