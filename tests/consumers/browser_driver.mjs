// Headless Chromium (Debian's, never a downloaded build) driven by playwright-core for
// tests/consumers.py: one JSON command per stdin line, one JSON answer per stdout line.
// Each page has its own context; requests leaving loopback are aborted and recorded.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const executablePath = process.env.RMH_CHROMIUM || '/usr/bin/chromium';
const args = JSON.parse(process.env.RMH_CHROMIUM_ARGS || '[]');
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

const browser = await chromium.launch({ executablePath, headless: true, args });
const pages = new Map();
let nextPage = 0;

function isLoopback(url) {
  try {
    const { protocol, hostname } = new URL(url);
    if (protocol === 'data:' || protocol === 'blob:' || protocol === 'about:') return true;
    return LOOPBACK.has(hostname);
  } catch {
    return false;
  }
}

async function open({ url, viewport }) {
  const context = await browser.newContext({ viewport: { width: viewport[0], height: viewport[1] } });
  const record = { console: [], errors: [], requests: [], failed: [], blocked: [] };
  await context.route('**/*', (route) => {
    const target = route.request().url();
    if (isLoopback(target)) return route.continue();
    record.blocked.push(target);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('console', (msg) => record.console.push(`${msg.type()}: ${msg.text()}`.slice(0, 2000)));
  page.on('pageerror', (err) => record.errors.push(String(err).slice(0, 2000)));
  page.on('requestfailed', (req) => record.failed.push([req.url(), req.failure()?.errorText || '']));
  page.on('response', (res) => record.requests.push([res.url(), res.status()]));
  const id = ++nextPage;
  pages.set(id, { context, page, record });
  await page.goto(url, { waitUntil: 'load' });
  return { page: id };
}

async function waitFor({ page: id, conditions, timeout_ms: timeout }) {
  const { page } = pages.get(id);
  for (const c of conditions) {
    if (c.text !== undefined) {
      await page.waitForFunction((t) => document.body && document.body.innerText.includes(t), c.text, { timeout });
    } else if (c.selector !== undefined) {
      await page.locator(c.selector).first().waitFor({ state: 'visible', timeout });
    } else if (c.js !== undefined) {
      // Polled with evaluate (not waitForFunction, whose string predicates a page's
      // Content-Security-Policy without 'unsafe-eval' refuses).
      const deadline = Date.now() + timeout;
      while (!(await page.evaluate(c.js))) {
        if (Date.now() > deadline) throw new Error(`Timeout ${timeout}ms exceeded waiting for ${c.js}`);
        await page.waitForTimeout(100);
      }
    } else if (c.idle) {
      await page.waitForLoadState('networkidle', { timeout });
    } else if (c.ms !== undefined) {
      await page.waitForTimeout(c.ms);
    } else {
      throw new Error(`unknown wait condition ${JSON.stringify(c)}`);
    }
  }
  return {};
}

async function screenshot({ page: id, path, selector }) {
  const { page } = pages.get(id);
  if (selector) await page.locator(selector).first().screenshot({ path });
  else await page.screenshot({ path });
  return { path };
}

async function box({ page: id, selector }) {
  const { page } = pages.get(id);
  const locator = page.locator(selector).first();
  return { box: (await locator.count()) ? await locator.boundingBox() : null };
}

// A real pointer: hover or click the first element matching ``selector``, or the page point (x, y).
async function pointer({ page: id, action, selector, x, y }) {
  const { page } = pages.get(id);
  if (selector !== undefined && selector !== null) {
    const locator = page.locator(selector).first();
    await (action === 'click' ? locator.click() : locator.hover());
  } else if (action === 'click') {
    await page.mouse.click(x, y);
  } else {
    await page.mouse.move(x, y);
  }
  return {};
}

const handlers = {
  pointer,
  version: async () => ({ version: browser.version() }),
  open,
  wait: waitFor,
  screenshot,
  box,
  eval: async ({ page: id, expression }) => ({ value: await pages.get(id).page.evaluate(expression) }),
  text: async ({ page: id, selector }) => ({ text: await pages.get(id).page.locator(selector).first().innerText() }),
  log: async ({ page: id }) => pages.get(id).record,
  close: async ({ page: id }) => {
    const entry = pages.get(id);
    pages.delete(id);
    if (entry) await entry.context.close();
    return {};
  },
};

const reply = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const request = JSON.parse(line);
  if (request.cmd === 'quit') break;
  const handler = handlers[request.cmd];
  try {
    if (!handler) throw new Error(`unknown command ${request.cmd}`);
    if (request.page !== undefined && !pages.has(request.page)) throw new Error(`no page ${request.page}`);
    reply({ id: request.id, ok: true, ...(await handler(request)) });
  } catch (err) {
    reply({ id: request.id, ok: false, error: String(err && err.message ? err.message : err).slice(0, 4000) });
  }
}
lines.close();
await browser.close();
process.exit(0);
