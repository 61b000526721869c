#!/usr/bin/env bash
# Make sure the PACS the integration tests talk to is installed: Debian's Orthanc with its DICOMweb
# plugin, and dcmtk (storescu, findscu, dsrdump). Tests start their own Orthanc on free ports.
set -euo pipefail

need=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 && command -v dsrdump >/dev/null 2>&1 || need+=(dcmtk)
if ((${#need[@]})); then
  echo "installing ${need[*]} (Debian packages) for the PACS tests" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -x /usr/sbin/Orthanc ] || { echo "Orthanc did not install" >&2; exit 1; }
echo "pacs: $(/usr/sbin/Orthanc --version 2>/dev/null | head -n 1), $(storescu --version 2>/dev/null | head -n 1)" >&2
