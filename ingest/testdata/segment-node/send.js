// send.js makes the calls it reads from stdin with Segment's Node SDK,
// @segment/analytics-node, pointed at ingest, and prints what the SDK reported:
//
//   {"host":"http://127.0.0.1:8080","writeKey":"wk","flushAt":100,
//    "calls":[{"method":"track","args":{"userId":"u1","event":"Product Clicked","properties":{...}}}, ...]}
//
// prints {"delivered":n,"failed":n,"errors":[the first 5],"statuses":[200,...]} on stdout.
// ingest/sdk_node_test.go runs it.
'use strict'
const { Analytics } = require('@segment/analytics-node')

async function main() {
  let input = ''
  for await (const chunk of process.stdin) input += chunk
  const plan = JSON.parse(input)
  const analytics = new Analytics({
    writeKey: plan.writeKey,
    host: plan.host,
    flushAt: plan.flushAt,
    flushInterval: 100,
    maxRetries: 3,
  })
  const out = { delivered: 0, failed: 0, errors: [], statuses: [] }
  analytics.on('http_response', (r) => out.statuses.push(r.status))
  analytics.on('error', (err) => {
    if (out.errors.length < 5) out.errors.push(String(err && (err.reason || err.code || err)))
  })
  for (const c of plan.calls) {
    analytics[c.method](c.args, (err) => {
      if (err) {
        out.failed++
      } else {
        out.delivered++
      }
    })
  }
  await analytics.closeAndFlush({ timeout: 30000 })
  process.stdout.write(JSON.stringify(out) + '\n')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
