"""The dashboard page: one self-contained HTML document (its CSS and JS
inline, no external asset, so it works on an offline box). It listens to
the dispatcher's status events (Server-Sent Events, about once a second)
and draws pools, workers, plots and the last warnings itself.
"""

import json as _json

_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>uhttp-workers</title>
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#1f2933;color:#fff;padding:8px 16px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:16px;margin:0}
header span{opacity:.85}
main{padding:12px 16px}
section.pool{background:#fff;border:1px solid #d8dde3;border-radius:6px;margin-bottom:12px;padding:8px 12px}
section.pool h2{font-size:15px;margin:0 0 6px}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;margin-left:6px}
.degraded{background:#c0392b;color:#fff}.parked{background:#8e44ad;color:#fff}
.ok{background:#27ae60;color:#fff}
.stats{display:flex;gap:18px;flex-wrap:wrap;margin-bottom:6px}
.stats b{font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:2px 8px;border-bottom:1px solid #eef0f2}
th{font-weight:600;color:#555}
td.state-busy{color:#d35400}td.state-ready{color:#27ae60}
td.state-backoff,td.state-parked{color:#c0392b}td.state-starting,td.state-paused{color:#7f8c8d}
.plots{display:flex;gap:16px;flex-wrap:wrap;margin:6px 0}
.plot{width:300px}.plot div{font-size:11px;color:#555}
svg{background:#fbfcfd;border:1px solid #eef0f2}
#log li{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;margin-bottom:2px}
#log .WARNING{color:#b7950b}#log .ERROR,#log .CRITICAL{color:#c0392b}
#conn.down{color:#e74c3c}
</style></head>
<body>
<header><h1>uhttp-workers</h1>
<span id="conn">connecting…</span>
<span>pid <b id="pid">-</b></span>
<span>uptime <b id="uptime">-</b></span>
<span>connections <b id="connections">-</b></span>
<span>pending <b id="pending">-</b></span>
<span>requests <b id="requests">-</b></span>
</header>
<main>
<div id="pools"></div>
<section class="pool"><h2>Last warnings and errors</h2><ul id="log"></ul></section>
</main>
<script>
"use strict";
const EVENTS = __EVENTS__;
function el(tag, attrs, text){const e=document.createElement(tag);
  for(const k in (attrs||{})) e.setAttribute(k, attrs[k]);
  if(text!==undefined&&text!==null) e.textContent=String(text); return e;}
function mb(v){return v==null?'-':(v/1048576).toFixed(1)+' MB';}
function spark(points, index, color, label){
  const w=300,h=60,svgns='http://www.w3.org/2000/svg';
  const box=el('div',{'class':'plot'});
  const vals=points.map(p=>p[index]).filter(v=>v!=null);
  const max=Math.max(1e-9,...vals);
  const last=vals.length?vals[vals.length-1]:null;
  box.appendChild(el('div',{},label+': '+(last==null?'-':last)+' (max '+(vals.length?max:'-')+')'));
  const svg=document.createElementNS(svgns,'svg');
  svg.setAttribute('width',w);svg.setAttribute('height',h);
  const n=points.length; let d='';
  points.forEach((p,i)=>{const v=p[index]; if(v==null) return;
    const x=n<2?w:(i*(w-2)/(n-1)+1), y=h-2-(v/max)*(h-4);
    d+=(d?'L':'M')+x.toFixed(1)+','+y.toFixed(1);});
  const path=document.createElementNS(svgns,'path');
  path.setAttribute('d',d||'M0,'+(h-2));path.setAttribute('fill','none');
  path.setAttribute('stroke',color);path.setAttribute('stroke-width','1.5');
  svg.appendChild(path); box.appendChild(svg); return box;}
function renderPool(pool){
  const s=el('section',{'class':'pool','data-pool':pool.name});
  const h=el('h2',{},pool.name);
  if(pool.degraded) h.appendChild(el('span',{'class':'badge degraded'},'degraded'));
  else h.appendChild(el('span',{'class':'badge ok'},'ok'));
  if(pool.parked) h.appendChild(el('span',{'class':'badge parked'},pool.parked+' parked'));
  s.appendChild(h);
  const st=el('div',{'class':'stats'});
  [['queue','queue'],['in_flight','in flight'],['streams','streams'],['websockets','websockets'],
   ['requests','requests'],['restarts','restarts'],['timeouts','timeouts'],
   ['rejected','rejected']].forEach(([k,label])=>{
    const d=el('span',{},label+' ');d.appendChild(el('b',{'data-stat':k},pool[k]));st.appendChild(d);});
  s.appendChild(st);
  const plots=el('div',{'class':'plots'});
  plots.appendChild(spark(pool.history,1,'#2980b9','requests/s'));
  plots.appendChild(spark(pool.history,2,'#27ae60','p50 ms'));
  plots.appendChild(spark(pool.history,3,'#c0392b','p99 ms'));
  s.appendChild(plots);
  const t=el('table');const head=el('tr');
  ['slot','pid','state','request','for','RSS','CPU %','restarts'].forEach(c=>head.appendChild(el('th',{},c)));
  t.appendChild(head);
  pool.workers.forEach(w=>{
    const r=el('tr',{'class':'worker','data-slot':w.slot,'data-pid':w.pid==null?'':w.pid,'data-state':w.state});
    r.appendChild(el('td',{},w.slot));
    r.appendChild(el('td',{'class':'pid'},w.pid==null?'-':(w.host?w.host+':'+w.pid:w.pid)));
    r.appendChild(el('td',{'class':'state state-'+w.state},w.state+(w.retiring?' (retiring: '+w.retiring+')':'')));
    const q=w.request;
    r.appendChild(el('td',{'class':'request'},q?((q.method||'')+' '+(q.path||'#'+q.id)):'-'));
    r.appendChild(el('td',{},q&&q.age!=null?q.age.toFixed(2)+' s':'-'));
    r.appendChild(el('td',{},mb(w.rss)));
    r.appendChild(el('td',{},w.cpu==null?'-':w.cpu));
    r.appendChild(el('td',{'class':'restarts'},w.restarts));
    t.appendChild(r);});
  s.appendChild(t); return s;}
function render(data){
  document.getElementById('pid').textContent=data.pid;
  document.getElementById('uptime').textContent=data.uptime+' s';
  document.getElementById('connections').textContent=data.connections;
  document.getElementById('pending').textContent=data.pending;
  document.getElementById('requests').textContent=data.requests;
  const pools=document.getElementById('pools');
  pools.replaceChildren(...data.pools.map(renderPool));
  const log=document.getElementById('log');
  log.replaceChildren(...data.log.slice().reverse().map(r=>{
    const li=el('li',{'class':r.level});
    li.textContent=new Date(r.time*1000).toLocaleTimeString()+' '+r.level+' '+r.name+': '+r.message;
    return li;}));
  document.body.setAttribute('data-updated', String(data.time));}
function connect(){
  const conn=document.getElementById('conn');
  const source=new EventSource(EVENTS);
  source.addEventListener('status',e=>{conn.textContent='live';conn.className='';render(JSON.parse(e.data));});
  source.onerror=()=>{conn.textContent='reconnecting…';conn.className='down';};}
connect();
</script>
</body></html>
"""


def page(events_path):
    """The dashboard's HTML, reading its events from `events_path`."""
    return _PAGE.replace('__EVENTS__', script_json(events_path)).encode('utf-8')


def script_json(value):
    """`value` as JSON that can stand inside a <script>: '<', '>' and '&'
    escaped, so that no '</script>' or '<!--' in it ends the script early
    (json.dumps already escapes every non-ASCII character)."""
    return _json.dumps(value).replace('<', '\\u003c').replace(
        '>', '\\u003e').replace('&', '\\u0026')
