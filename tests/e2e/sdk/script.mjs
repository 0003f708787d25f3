// Drives the official Rebilly JS SDK, unmodified, against a Dataport
// gateway: queue (POST and PUT with a client id), list with sort and
// filter, get until completed, then download each CSV through its signed
// link. Prints one JSON document for rebilly_sdk_test.go to check.
import { RebillyExperimentalAPI } from 'rebilly-js-sdk';

const gateway = process.env.GATEWAY_URL;
const apiKey = process.env.API_KEY;
const organizationId = process.env.ORGANIZATION_ID || null;
const clientId = process.env.CLIENT_ID;
if (!gateway || !apiKey || !clientId) {
  throw new Error('GATEWAY_URL, API_KEY and CLIENT_ID are required');
}

const api = RebillyExperimentalAPI({ apiKey, organizationId, urls: { live: gateway, sandbox: gateway }, timeout: 20000 });
const fields = ['id', 'customerId', 'amount', 'currency', 'status', 'createdTime'];

const all = await api.dataExports.queue({
  data: { name: 'all transactions', resource: 'transactions', format: 'csv', fields, arguments: { sort: 'createdTime' } },
});
const approved = await api.dataExports.queue({
  id: clientId,
  data: { name: 'approved USD', resource: 'transactions', format: 'csv', fields, arguments: { filter: 'status:approved;currency:USD' } },
});
let conflict = null;
try {
  await api.dataExports.queue({ id: clientId, data: { name: 'again', resource: 'transactions', format: 'csv' } });
} catch (e) {
  conflict = e.name;
}
let invalid = null;
try {
  await api.dataExports.queue({ data: { name: 'bad', resource: 'transactions', format: 'csv', fields: ['id', 'nope'] } });
} catch (e) {
  invalid = { name: e.name, status: e.status ?? e.response?.status ?? null };
}

const list = await api.dataExports.getAll({ limit: 5, sort: '-createdTime,name', filter: 'resource:transactions;format:csv' });
const listed = { total: list.total, limit: list.limit, offset: list.offset, names: list.items.map((i) => i.fields.name) };

async function waitCompleted(id) {
  const deadline = Date.now() + 120000;
  for (;;) {
    const item = await api.dataExports.get({ id, expand: 'user' });
    const f = item.fields;
    if (f.status === 'completed' || f.status === 'failed') {
      return f;
    }
    if (Date.now() > deadline) {
      throw new Error(`export ${id} still ${f.status}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

const exports = [];
for (const created of [all, approved]) {
  const f = await waitCompleted(created.fields.id);
  const signed = (f._links || []).find((l) => l.rel === 'signedLink');
  let csv = null;
  if (signed) {
    const res = await fetch(signed.href);
    csv = await res.text();
  }
  exports.push({ id: f.id, name: f.name, status: f.status, reason: f.reason ?? null, recordCount: f.recordCount, user: f._embedded?.user?.id ?? null, signedLink: signed ?? null, csv });
}

const completed = await api.dataExports.getAll({ filter: 'status:completed', sort: 'name' });
await api.dataExports.delete({ id: clientId });
let afterDelete = null;
try {
  await api.dataExports.get({ id: clientId });
} catch (e) {
  afterDelete = e.name;
}

process.stdout.write(JSON.stringify({
  created: { all: all.fields.id, approved: approved.fields.id, approvedStatus: approved.response.status },
  conflict, invalid, listed,
  completed: completed.items.map((i) => i.fields.name),
  exports, afterDelete,
}));
