// A naive RFC 6962 reference (recursive MTH and PATH, straight from the RFC's definitions) used to cross-check
// the contract's inclusion-proof view. Deliberately written differently from both the Solidity and the Python code.
"use strict";

const { ethers } = require("hardhat");

const hashLeaf = (data) => ethers.sha256(ethers.concat(["0x00", data]));
const hashChildren = (left, right) => ethers.sha256(ethers.concat(["0x01", left, right]));

// The largest power of two strictly smaller than n (n >= 2).
function split(n) {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

// MTH(D[n]) over leaf hashes.
function root(leafHashes) {
  if (leafHashes.length === 0) return ethers.sha256("0x");
  if (leafHashes.length === 1) return leafHashes[0];
  const k = split(leafHashes.length);
  return hashChildren(root(leafHashes.slice(0, k)), root(leafHashes.slice(k)));
}

// PATH(m, D[n]), bottom-up.
function inclusionProof(m, leafHashes) {
  const n = leafHashes.length;
  if (n <= 1) return [];
  const k = split(n);
  if (m < k) return [...inclusionProof(m, leafHashes.slice(0, k)), root(leafHashes.slice(k))];
  return [...inclusionProof(m - k, leafHashes.slice(k)), root(leafHashes.slice(0, k))];
}

// Known-answer vectors from the certificate-transparency test data (leaf inputs and the roots of each prefix).
const CT_LEAVES = [
  "0x",
  "0x00",
  "0x10",
  "0x2021",
  "0x3031",
  "0x40414243",
  "0x5051525354555657",
  "0x606162636465666768696a6b6c6d6e6f",
];
const CT_ROOTS = [
  "0x6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
  "0xfac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
  "0xaeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
  "0xd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
  "0x4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
  "0x76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
  "0xddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
  "0x5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
// PATH(0, D[8]) from the same test data.
const CT_PATH_0_8 = [
  "0x96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
  "0x5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
  "0x6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
];

module.exports = { hashLeaf, hashChildren, root, inclusionProof, CT_LEAVES, CT_ROOTS, CT_PATH_0_8 };
