/**
 * The user pool's groups: the gateway matches group names exactly in API Gateway's `"a,b"` form, so the app
 * refuses to create a group whose name could be read as another (`support,admin`, `[admin]`, ` admin`).
 */
import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { App, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { ADMIN_GROUP, assertValidGroupName, TenantAuth } from '../lib/auth';

describe('TenantAuth groups', () => {
  it('creates the admin group under its exact name', () => {
    const stack = new Stack(new App(), 'AuthGroups');
    new TenantAuth(stack, 'Auth', { removalPolicy: RemovalPolicy.DESTROY });
    Template.fromStack(stack).hasResourceProperties('AWS::Cognito::UserPoolGroup', { GroupName: ADMIN_GROUP });
  });

  it('refuses group names holding the separator of API Gateway forms', () => {
    const stack = new Stack(new App(), 'AuthOddGroups');
    const auth = new TenantAuth(stack, 'Auth', { removalPolicy: RemovalPolicy.DESTROY });
    for (const name of ['support,admin', '[admin]', ' admin', 'admin ', 'a b', 'admin\t', '']) {
      assert.throws(() => auth.addGroup(`G${name.length}`, { groupName: name }), /not allowed/, JSON.stringify(name));
      assert.throws(() => assertValidGroupName(name), /not allowed/);
    }
    assert.equal(assertValidGroupName('Admin'), 'Admin');
    auth.addGroup('Support', { groupName: 'support-team' });
    Template.fromStack(stack).resourceCountIs('AWS::Cognito::UserPoolGroup', 2);
  });
});
